"""ONNX files as slimlab writes and reads them: metadata, input facts, atomic saves, safe reads.

slimlab's ONNX files carry what a deployment needs beside the graph, in `metadata_props`
(readable with onnxruntime's `get_modelmeta().custom_metadata_map`): the class names, the
input size and the normalisation (mean/std on the [0, 1] scale), the precision, the accuracy
measured through onnxruntime, params and FLOPs, and the checkpoint's arch and meta.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from engine.atomic import atomic_file
from engine.errors import DeployError

FORMAT = "slimlab-onnx/1"
PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message: larger models need ONNX external data
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
JSON_KEYS = ("class_names", "mean", "std", "slimlab.arch", "slimlab.meta", "slimlab.quantization", "slimlab.plan")


@dataclass
class OnnxInfo:
    """What the checkpoint browser and the quantizer need to know about an ONNX file."""

    path: str
    size: int
    opset: int | None
    precision: str  # fp32 | int8
    input_name: str
    input_shape: list[int | str | None]  # (N, C, H, W); a str or None is a dynamic dimension
    output_names: list[str]
    output_shape: list[int | str | None]
    producer: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def chw(self) -> tuple[int, int, int] | None:
        dims = self.input_shape[1:]
        if len(dims) == 3 and all(isinstance(d, int) for d in dims):
            return tuple(dims)  # type: ignore[return-value]
        return None

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None for a dynamic batch axis."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) else None

    @property
    def num_classes(self) -> int | None:
        names = self.metadata.get("class_names")
        if isinstance(names, list) and names:
            return len(names)
        last = self.output_shape[-1] if len(self.output_shape) == 2 else None
        return last if isinstance(last, int) else None

    @property
    def accuracy(self) -> float | None:
        value = self.metadata.get("accuracy")
        return float(value) if value not in (None, "") else None


def set_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    """Write `values` into metadata_props (JSON for lists and dicts, str otherwise), replacing keys."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        if value is None:
            continue
        text = json.dumps(value, default=str) if isinstance(value, dict | list | tuple) else str(value)
        if key in existing:
            existing[key].value = text
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, text
            existing[key] = prop


def metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props as a dict, JSON values decoded."""
    out: dict[str, Any] = {}
    for p in model.metadata_props:
        value: Any = p.value
        if p.key in JSON_KEYS:
            try:
                value = json.loads(p.value)
            except ValueError:
                pass
        out[p.key] = value
    return out


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return dims


def describe(model: onnx.ModelProto, path: str | Path = "", size: int | None = None) -> OnnxInfo:
    """OnnxInfo of a loaded model (its first graph input is the image batch)."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise DeployError(f"{path or 'model'}: the ONNX graph has no input to feed images to")
    first = inputs[0]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    meta = metadata(model)
    return OnnxInfo(
        path=str(path),
        size=size if size is not None else model.ByteSize(),
        opset=opset,
        precision=meta.get("precision") or ("int8" if is_quantized(model) else "fp32"),
        input_name=first.name,
        input_shape=_dims(first),
        output_names=[o.name for o in model.graph.output],
        output_shape=_dims(model.graph.output[0]) if model.graph.output else [],
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        metadata=meta,
    )


def read(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file, or a DeployError saying what the file is instead."""
    path = Path(path)
    if not path.exists():
        raise DeployError(f"{path}: no such file")
    if path.is_dir():
        raise DeployError(f"{path}: is a folder, not an ONNX model file")
    try:
        model = onnx.load_model(str(path), format="protobuf", load_external_data=True)
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise DeployError(f"{path}: not an ONNX model ({_what_is(path) or type(e).__name__}); give a .onnx file "
                          "(e.g. from slimlab export)") from None
    if not model.graph.node or model.ir_version <= 0:
        raise DeployError(f"{path}: not an ONNX model ({_what_is(path) or 'no graph'}); give a .onnx file "
                          "(e.g. from slimlab export)")
    return model


def _what_is(path: Path) -> str:
    """A hint for files people give by mistake."""
    head = path.read_bytes()[:8]
    if head.startswith(b"PK"):
        return "it is a zip archive, e.g. a PyTorch checkpoint: export it first with slimlab export"
    if head[:1] == b"\x80":
        return "it is a Python pickle"
    if not head:
        return "the file is empty"
    return ""


def peek(path: str | Path) -> OnnxInfo:
    """OnnxInfo without the weights (for the checkpoint browser)."""
    path = Path(path)
    try:
        model = onnx.load_model(str(path), format="protobuf", load_external_data=False)
    except Exception:
        raise DeployError(f"{path}: not an ONNX model") from None
    if not model.graph.node:
        raise DeployError(f"{path}: not an ONNX model (no graph)")
    return describe(model, path, path.stat().st_size)


def save(model: onnx.ModelProto, path: str | Path) -> int:
    """Write atomically (a temporary file, then rename); returns the bytes written."""
    data = serialize(model)
    with atomic_file(path, "wb", durable=True) as f:
        f.write(data)
    return len(data)


def serialize(model: onnx.ModelProto) -> bytes:
    if model.ByteSize() > PROTOBUF_LIMIT:
        raise DeployError(
            f"the ONNX model is {model.ByteSize() / 2**30:.1f} GiB, above protobuf's 2 GiB limit for one file; "
            "prune or compress it first"
        )
    return model.SerializeToString()


def browse(path: str | Path) -> dict[str, Any]:
    """What the checkpoint browser shows for an ONNX file: a plain dict, an `error` when unreadable."""
    path = Path(path)
    size: int | None = None
    try:
        size = path.stat().st_size
        info = peek(path)
    except (OSError, DeployError) as e:
        return {"path": str(path), "kind": "onnx", "size": size, "error": str(e)}
    meta = info.metadata
    quant = meta.get("slimlab.quantization") if isinstance(meta.get("slimlab.quantization"), dict) else {}
    arch = meta.get("slimlab.arch") if isinstance(meta.get("slimlab.arch"), dict) else {}
    source = meta.get("slimlab.meta") if isinstance(meta.get("slimlab.meta"), dict) else {}
    names = meta.get("class_names") if isinstance(meta.get("class_names"), list) else None
    return {
        "path": str(path), "kind": "onnx", "size": size, "opset": info.opset, "precision": info.precision,
        "input": "x".join(str(d) if isinstance(d, int) else ("N" if i == 0 else "?") for i, d in enumerate(info.input_shape)),
        "batch": info.batch or "dynamic",
        "classes": names, "num_classes": info.num_classes, "accuracy": info.accuracy,
        "params": _number(meta.get("params")), "flops": _number(meta.get("flops")),
        "producer": info.producer, "arch": arch.get("name"), "stage": source.get("stage"),
        "fp32_accuracy": quant.get("fp32_accuracy"), "fp32_layers": quant.get("fp32_layers"),
        "method": quant.get("method"), "slimlab": meta.get("slimlab.format") == FORMAT,
        # a detector's file carries mAP50-95 and mAP50 (Ultralytics' 0..1 figures), never an accuracy
        "task": meta.get("task"), "mAP50_95": _figure(meta.get("mAP50_95")), "mAP50": _figure(meta.get("mAP50")),
    }


def _figure(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _number(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
