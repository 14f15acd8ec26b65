"""The detection export formats beside ONNX, described without importing anything heavy (preset
checks use it): what Ultralytics' exporter calls each, what runs it, and the packages it needs.

A format whose packages are not installed cannot be exported here, and is refused with the reason
and the install step; none of them downloads anything at export time (see engine/detect/runtimes.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from engine.errors import DeployError


@dataclass(frozen=True)
class Format:
    name: str  # slimlab's name: the export stage's `formats` and `slimlab export --format`
    exporter: str  # Ultralytics' export format
    int8: bool
    runtime: str  # what runs it
    suffix: str  # what Ultralytics names the artifact after the model's stem
    modules: tuple[str, ...]  # the Python packages it needs, as imported
    install: str  # how to get them
    # converted and validated in a process of its own: pnnx traces with torch.jit and ncnn's bindings
    # bring their own OpenMP; after a long run in one process (quantize, distillation) that path has
    # crashed the whole process with SIGSEGV, where a child's crash is one failed export
    isolated: bool = False

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"


SETUP = "`make setup-detect` (the deploy-detect extra: openvino, nncf, ncnn, pnnx)"
LITERT_SETUP = ("`make setup-litert` (the deploy-litert extra: litert-torch, ai-edge-litert, ai-edge-quantizer; "
                "about 1 GB with jax)")
FORMATS = {
    f.name: f
    for f in (
        Format("openvino", "openvino", False, "openvino", "_openvino_model", ("openvino",), SETUP),
        Format("openvino-int8", "openvino", True, "openvino", "_int8_openvino_model", ("openvino", "nncf"), SETUP),
        Format("ncnn", "ncnn", False, "ncnn", "_ncnn_model", ("ncnn", "pnnx"), SETUP, isolated=True),
        Format("litert-int8", "litert", True, "litert", "_int8.tflite",
               ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"), LITERT_SETUP),
    )
}
NAMES = tuple(FORMATS)


def get(name: str) -> Format:
    if name not in FORMATS:
        raise DeployError(f"format {name!r}: slimlab writes detection models as onnx, ultralytics, {', '.join(NAMES)}")
    return FORMATS[name]


def unavailable(name: str) -> str | None:
    """Why `name` cannot be exported here, or None when it can."""
    fmt = get(name)
    missing = [m for m in fmt.modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"{name} needs the Python package{'s' if len(missing) > 1 else ''} {', '.join(missing)}, not installed "
            f"in this environment; install {fmt.install}")


def refuse_unavailable(names: list[str], where: str) -> None:
    """DeployError naming every format in `names` that cannot be exported here, and why."""
    reasons = [r for r in (unavailable(n) for n in names) if r]
    if reasons:
        raise DeployError(f"{where}: " + "; ".join(reasons))


def artifact_name(stem: str, name: str) -> str:
    """The file or folder a format's export of `<stem>` is written as (Ultralytics' own naming)."""
    return stem + get(name).suffix
