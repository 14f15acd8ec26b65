"""Static INT8 post-training quantization with onnxruntime's quantizer, under an accuracy budget.

`quant_pre_process` first (shape inference, graph fusions such as Conv+BatchNorm), then
`quantize_static` in the QDQ format with per-channel weights, calibrated on N training images.
The INT8 model's accuracy is measured through onnxruntime next to the fp32 model's; when it
loses more than `max_drop` points the guard (engine/deploy/guard.py) keeps the most sensitive
layers in fp32, and when nothing reaches the budget no INT8 model is returned at all.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime import quantization as ortq
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from engine.deploy import onnxfile, runtime
from engine.deploy.quiet import quiet
from engine.errors import DeployError
from engine.task import ACCURACY, Metric

METHODS = {
    "minmax": ortq.CalibrationMethod.MinMax,
    "entropy": ortq.CalibrationMethod.Entropy,
    "percentile": ortq.CalibrationMethod.Percentile,
}
X86 = ("x86_64", "amd64", "i386", "i686")
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PROBE_IMAGES = 128  # calibration images the guard compares outputs on


@dataclass
class QuantizeOptions:
    samples: int = 256
    method: str = "minmax"
    per_channel: bool = True
    activations: str = "auto"  # auto | uint8 | int8
    max_drop: float | None = 1.0  # accuracy points; None: no guard


@dataclass
class QuantizeResult:
    model: onnx.ModelProto | None  # None: INT8 could not meet the budget; keep the fp32 model
    fp32_accuracy: float  # the task's metric (a fraction: accuracy, mAP50-95) of the fp32 file
    accuracy: float | None  # of `model`
    excluded: list[str] = field(default_factory=list)  # layers kept in fp32 by the guard
    attempts: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    fp32_figures: dict[str, float] = field(default_factory=dict)  # everything `score` gave, fp32
    figures: dict[str, float] = field(default_factory=dict)  # ... and for `model`

    @property
    def drop(self) -> float | None:
        """Accuracy points lost (positive = worse)."""
        return None if self.accuracy is None else (self.fp32_accuracy - self.accuracy) * 100


def host_settings(activations: str) -> tuple[str, bool]:
    """(activation type, reduce_range) following onnxruntime's CPU guidance for this machine.

    x86: uint8 activations with int8 weights, and 7-bit weights (reduce_range) on CPUs without
    VNNI, whose 8-bit dot products can saturate. Elsewhere (ARM): int8 activations.
    """
    x86 = platform.machine().lower() in X86
    act = activations if activations != "auto" else ("uint8" if x86 else "int8")
    vnni = cpu_has_vnni()
    return act, bool(x86 and act == "uint8" and vnni is False)


def cpu_has_vnni() -> bool | None:
    """Whether the CPU has 8-bit dot products (VNNI); None when it cannot be told."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


class Batches(ortq.CalibrationDataReader):
    """onnxruntime's calibration reader over fixed float32 batches.

    The calibrator keeps every intermediate tensor of the batches it is given until it computes
    their ranges; read one batch at a time (`set_range`, onnxruntime's strided calibration) it
    merges the ranges batch by batch, so memory stays that of one batch (a 640 px detector's
    256 calibration images would otherwise hold tens of GB)."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, batches
        self.start, self.end = 0, len(batches)
        self._it = iter(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:
        self._it = iter(self.batches[self.start:self.end])


@dataclass
class QuantizeData:
    """What a task hands the quantizer for one fp32 file.

    `calibration`: float32 batches prepared exactly as the model takes them (the same ones every
    time); `score(ONNX file or bytes)`: the task's figures on the val split through onnxruntime,
    its metric among them (accuracy, or mAP50-95 and mAP50); `compare(reference, got)`: how close
    a partly quantized model's outputs are to fp32's on probe batches, in dB (higher is closer),
    which ranks the layers for the guard; `probe`: calibration images the guard probes with."""

    calibration: list[np.ndarray]
    score: Callable[[Any], dict[str, float]]
    compare: Callable[[list[np.ndarray], list[np.ndarray]], float] | None = None
    probe: int = PROBE_IMAGES
    notes: list[str] = field(default_factory=list)


class Quantizer:
    """One fp32 model prepared once (pre-processed, calibrated once), quantized as often as the guard asks."""

    def __init__(self, fp32: onnx.ModelProto, calibration: list[np.ndarray], options: QuantizeOptions,
                 workdir: Path, log: Callable[[str], None] | None = None) -> None:
        if options.method not in METHODS:
            raise DeployError(f"method {options.method!r}: use one of {', '.join(METHODS)}")
        self.options, self.log, self.dir = options, log, workdir
        self.activations, self.reduce_range = host_settings(options.activations)
        src = workdir / "fp32.onnx"
        onnxfile.save(fp32, src)
        self.pre = workdir / "pre.onnx"
        self._pre_process(src)
        self.input_name = onnxfile.describe(fp32).input_name
        self.calibration = calibration
        self.cache = workdir / "calibration.json"
        self.count = 0

    def _pre_process(self, src: Path) -> None:
        # onnx's own shape inference covers every op a CNN exports to; onnxruntime's symbolic
        # inference (meant for transformer graphs) fails on some detection heads and then saves
        # its half-inferred model, with uuid-named external data, into the working directory
        try:
            with quiet(self.log, "quantize"):
                ortq.quant_pre_process(str(src), str(self.pre), skip_symbolic_shape=True)
        except Exception as e:
            raise DeployError(f"onnxruntime's quantization pre-processing failed: {str(e).splitlines()[0][:300]}") from None

    def settings(self) -> dict[str, Any]:
        o = self.options
        return {"method": o.method, "samples": o.samples, "per_channel": o.per_channel,
                "activations": self.activations, "weights": "int8", "reduce_range": self.reduce_range,
                "format": "QDQ", "max_drop": o.max_drop}

    def quantize(self, exclude: Iterable[str] = (), only: Iterable[str] | None = None) -> Path:
        """An INT8 file with `exclude` kept in fp32 (or only `only` quantized); the first call calibrates."""
        self.count += 1
        out = self.dir / f"int8-{self.count}.onnx"
        act = ortq.QuantType.QUInt8 if self.activations == "uint8" else ortq.QuantType.QInt8
        try:
            with quiet(self.log, "quantize"):
                ortq.quantize_static(
                    str(self.pre), str(out), Batches(self.input_name, self.calibration),
                    quant_format=ortq.QuantFormat.QDQ, per_channel=self.options.per_channel,
                    reduce_range=self.reduce_range, activation_type=act, weight_type=ortq.QuantType.QInt8,
                    calibrate_method=METHODS[self.options.method], nodes_to_exclude=list(exclude) or None,
                    nodes_to_quantize=list(only) if only is not None else None,
                    calibration_cache_path=str(self.cache), extra_options={"CalibStridedMinMax": 1},
                )
        except DeployError:
            raise
        except Exception as e:
            raise DeployError(f"onnxruntime's quantizer failed: {str(e).splitlines()[0][:300]}") from None
        return out

    def compute_nodes(self) -> list[tuple[str, str]]:
        """(node name, layer name) of every Conv/Gemm/MatMul of the pre-processed graph, in order."""
        model = onnx.load(str(self.pre))
        inits = {i.name for i in model.graph.initializer}
        out = []
        for n in model.graph.node:
            if n.op_type in COMPUTE_OPS:
                weight = next((i for i in n.input[1:2] if i in inits), None)
                layer = weight.removesuffix(".weight") if weight else n.name
                out.append((n.name, layer))
        return out

    def tail_nodes(self) -> list[tuple[str, str]]:
        """(node name, 'op node') of the quantizable nodes between the last conv/linear layers and the
        outputs: a head's decoding (a detector's box arithmetic, the sigmoid of its class scores, the
        concat that puts pixels and probabilities into one tensor) is quantized too, and can hurt more
        than any layer."""
        model = onnx.load(str(self.pre))
        quantizable = set(QLinearOpsRegistry) | set(QDQRegistry)
        producer = {o: n for n in model.graph.node for o in n.output}
        seen: set[str] = set()
        tail = []
        todo = [producer[o.name] for o in model.graph.output if o.name in producer]
        while todo:
            n = todo.pop()
            if n.name in seen or n.op_type in COMPUTE_OPS:
                continue
            seen.add(n.name)
            if n.op_type in quantizable:
                tail.append(n)
            todo += [producer[i] for i in n.input if i in producer]
        order = {n.name: i for i, n in enumerate(model.graph.node)}
        return [(n.name, f"{n.op_type} {n.name}") for n in sorted(tail, key=lambda n: order[n.name])]


def accuracy_scorer(val: Callable[[], Iterable[tuple[Any, Any]]]) -> Callable[[Any], dict[str, float]]:
    """score(ONNX model, as a file or bytes) -> {"accuracy": top-1 on `val()`} through onnxruntime."""
    return lambda model: {"accuracy": runtime.accuracy(runtime.session(model), val())}


def quantize(
    fp32: onnx.ModelProto,
    data: QuantizeData,
    options: QuantizeOptions,
    *,
    log: Callable[[str], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
    metric: Metric = ACCURACY,
) -> QuantizeResult:
    """Quantize `fp32` calibrated on `data.calibration`; both scored by `data.score`; the guard when
    INT8 loses more than `max_drop` points of the task's metric."""
    from engine.deploy.guard import Guard

    say = progress or (lambda f, text: None)
    with tempfile.TemporaryDirectory(prefix="slimlab-quantize-") as tmp:
        say(0.0, "pre-processing")
        q = Quantizer(fp32, data.calibration, options, Path(tmp), log)
        fp32_figures = data.score(onnxfile.serialize(fp32))
        say(0.1, "calibrating and quantizing")
        first = q.quantize()
        figures = data.score(first)
        fp32_acc, acc = fp32_figures[metric.key], figures[metric.key]
        result = QuantizeResult(None, fp32_acc, acc, settings=q.settings(), fp32_figures=fp32_figures,
                                figures=figures, attempts=[{"excluded": 0, "accuracy": acc}])
        path: Path | None = first
        if options.max_drop is not None and result.drop > options.max_drop + 1e-9:
            say(0.3, f"{metric.label} guard")
            path = Guard(q, data, fp32_acc, options.max_drop, log=log, progress=say, metric=metric).run(result)
        result.model = onnx.load(str(path)) if path is not None else None
        say(1.0, "done")
        return result
