"""PyTorch model -> ONNX, through torch.export and torch.onnx's dynamo exporter, checked before kept.

The graph is captured with `torch.export.export` first, so that an operator the ONNX exporter
cannot translate is reported with the module that calls it. The translated graph is kept only
after onnx's checker accepts it and onnxruntime reproduces the PyTorch outputs on real images
(max |difference| at most `tolerance`, at the full check batch and at batch 1).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from engine.deploy import runtime
from engine.deploy.onnxfile import serialize
from engine.deploy.quiet import quiet
from engine.errors import DeployError

DEFAULT_OPSET = 18
MIN_OPSET = 13  # the dynamo exporter translates at 18 and converts down; older opsets lack what it needs
TOLERANCE_FP32 = 1e-3
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"


@dataclass
class Exported:
    model: onnx.ModelProto
    max_abs_diff: float
    checked_on: str  # e.g. "32 validation images"
    input_shape: tuple[int, int, int]
    batch: int | None  # None: dynamic batch axis
    opset: int


def export(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    images: torch.Tensor | None = None,
    images_label: str = "validation images",
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float | np.ndarray = TOLERANCE_FP32,
    rtol: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> Exported:
    """Export `model` (a copy, in eval mode on the CPU) and check it; nothing is written here.

    `images` (N, C, H, W), normalised as the model expects, are the check batch; without them
    random inputs are used and `checked_on` says so. `batch` None gives a dynamic batch axis.
    `tolerance` bounds |ONNX - PyTorch|: one number, or an array broadcast against the first output
    (outputs on different scales, such as box pixels and class scores), plus `rtol` times |PyTorch|
    (float32 rounding grows with the value: boxes far outside the image of a barely trained head).
    """
    if opset < MIN_OPSET:
        raise DeployError(f"opset {opset} is too old for the exporter; use {MIN_OPSET} or newer (default {DEFAULT_OPSET})")
    if batch is not None and batch < 1:
        raise DeployError(f"batch {batch}: give a positive batch size, or dynamic")
    model = copy.deepcopy(model).cpu().float().eval()
    check, checked_on = _check_batch(images, input_shape, batch, images_label)
    example = check[: batch or 2] if len(check) >= (batch or 2) else _repeat(check, batch or 2)
    program = _capture(model, example, dynamic=batch is None, log=log)
    proto = _translate(program, example, opset, log=log)
    if batch is None:
        _name_batch_axis(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise DeployError(f"the exported ONNX graph fails onnx's checker: {_first_line(e)}") from None
    diff = _compare(model, proto, check, batch, tolerance, rtol, checked_on)
    return Exported(proto, diff, checked_on, tuple(input_shape), batch, opset)


def _check_batch(images: torch.Tensor | None, shape: tuple[int, int, int], batch: int | None,
                 label: str) -> tuple[torch.Tensor, str]:
    if images is None:
        g = torch.Generator().manual_seed(0)
        n = batch or 8
        return torch.randn(n, *shape, generator=g), f"{n} random inputs (no data given)"
    if tuple(images.shape[1:]) != tuple(shape):
        raise DeployError(
            f"the model is exported for {'x'.join(map(str, shape))} inputs but the check images are "
            f"{'x'.join(map(str, images.shape[1:]))}; give an input size that matches the data"
        )
    images = images.float()
    if batch is not None:
        images = _repeat(images, batch)[:batch]
    return images, f"{len(images)} {label}"


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // len(x))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n]


def _capture(model: nn.Module, example: torch.Tensor, *, dynamic: bool, log) -> torch.export.ExportedProgram:
    shapes = ({0: torch.export.Dim(BATCH_AXIS)},) if dynamic else None
    try:
        with quiet(log, "export"), torch.no_grad():
            return torch.export.export(model, (example,), dynamic_shapes=shapes, strict=False)
    except Exception as e:
        text = _messages(e)
        if dynamic and re.search(r"Constraints violated|specializ|batch", text):
            raise DeployError(
                f"{type(model).__name__} fixes its batch size (torch.export: {_first_line(e).split('!')[0]}), so it "
                "cannot be exported with a dynamic batch axis; export with a fixed batch (--batch N, or batch: N "
                "in the stage)"
            ) from None
        raise DeployError(f"torch.export cannot capture {type(model).__name__}: {_first_line(e)}") from None


def _translate(program: torch.export.ExportedProgram, example: torch.Tensor, opset: int, *, log) -> onnx.ModelProto:
    try:
        with quiet(log, "export"):
            onnx_program = torch.onnx.export(
                program, (example,), None, dynamo=True, verbose=False, optimize=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            )
            return onnx_program.model_proto
    except Exception as e:
        text = _messages(e)
        culprit = _unsupported(program, text)
        if culprit:
            raise DeployError(
                f"{culprit} has no ONNX translation, so the model cannot be exported. Replace it with standard "
                "layers, or register an ONNX translation for it (torch.onnx custom_translation_table)"
            ) from None
        raise DeployError(f"the ONNX exporter failed: {_first_line(e)}") from None


def _unsupported(program: torch.export.ExportedProgram, text: str) -> str | None:
    """'module body.1 (Odd) calls slimtest.wiggle' for the operator the exporter could not translate."""
    found = re.search(r"No ONNX function found for (.+?)\. Failure", text)
    node_name = re.search(r"translating node %(\S+)", text)
    if not found and not node_name:
        return None
    target = found.group(1) if found else None
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        if (target and repr(node.target) == target) or (node_name and node.name == node_name.group(1)):
            op = str(node.target).removesuffix(".default")
            stack = node.meta.get("nn_module_stack") or {}
            path, cls = next(reversed(stack.values()), ("", ""))
            cls = str(getattr(cls, "__name__", cls)).rsplit(".", 1)[-1]
            where = f"module '{path}' ({cls})" if path else f"the model's own forward ({cls})"
            return f"{where} calls the operator {op}, which"
    op = re.search(r"op='([^']+)'", target or "")
    return f"the operator {op.group(1) if op else target}" if target else None


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """The exporter names the batch dimension by its symbol (s0, s77 ...); call it `batch`."""
    first = proto.graph.input[0].type.tensor_type.shape.dim
    symbol = first[0].dim_param if len(first) and first[0].HasField("dim_param") else None
    if not symbol:
        return
    for info in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for d in info.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == symbol:
                d.dim_param = BATCH_AXIS


def _compare(model: nn.Module, proto: onnx.ModelProto, check: torch.Tensor, batch: int | None,
             tolerance: float | np.ndarray, rtol: float, checked_on: str) -> float:
    sess = runtime.session(serialize(proto))
    with torch.no_grad():
        expected = _first_output(model(check)).numpy()
    got = runtime.predict(sess, check.numpy())
    if got.shape != expected.shape:
        raise DeployError(f"onnxruntime gives outputs of shape {got.shape}, PyTorch {expected.shape}")
    pairs = [(got, expected)]
    if batch is None and len(check) > 1:  # a dynamic axis must really take any batch, 1 included
        pairs.append((runtime.predict(sess, check[:1].numpy()), expected[:1]))
    diff, worst = 0.0, 0.0  # max |difference|, and its largest share of the tolerance there
    for a, b in pairs:
        if a.size:
            d = np.abs(a - b)
            diff = max(diff, float(d.max()))
            worst = max(worst, float((d / (np.broadcast_to(tolerance, d.shape) + rtol * np.abs(b))).max()))
    if not np.isfinite(diff) or worst > 1:
        bound = f"{tolerance:g}" if np.ndim(tolerance) == 0 else "the tolerance of that output"
        raise DeployError(
            f"the ONNX model does not reproduce PyTorch: max |difference| {diff:.3g} > {bound} on "
            f"{checked_on}; nothing written"
        )
    return diff


def _first_output(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list | tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and out:
        return _first_output(next(iter(out.values())))
    raise DeployError(f"the model returns {type(out).__name__}; export needs a tensor of logits (or a tuple starting with one)")


def _messages(e: BaseException) -> str:
    parts = []
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(str(e))
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def _first_line(e: BaseException) -> str:
    for line in str(e).splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if line:
            return line[:300]
    return type(e).__name__
