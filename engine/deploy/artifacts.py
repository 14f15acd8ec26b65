"""Deployable files and their figures: an exported model written with its metadata and accuracy.

An *artifact* record (a plain dict, stored in summary.json) describes one deployable file:
`name`, `file` (relative to the run directory), `format` (fp32 | int8 | sparse-<b>bit),
`accuracy` (through onnxruntime, or the reloaded model for compressed files), `params`,
`flops`, `size` (bytes on disk) and what produced it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from engine.deploy import export as exporter
from engine.deploy import onnxfile, runtime
from engine.deploy.data import Images


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def export_file(
    model: nn.Module,
    out: Path,
    *,
    input_shape: tuple[int, int, int],
    images: Images | None,
    batch: int | None = None,
    opset: int = exporter.DEFAULT_OPSET,
    class_names: list[str] | None = None,
    arch: dict | None = None,
    plan: dict | None = None,
    meta: dict | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Export, check, measure accuracy on the validation images, annotate, then write `out` atomically.

    Nothing is written when any step fails. Returns the artifact record. `progress(fraction,
    what)` hears of each step.
    """
    from engine import measure

    say = progress or (lambda fraction, what: None)
    model = copy.deepcopy(model).cpu().float().eval()  # the caller's model stays where it is
    check = images.check_batch(32) if images is not None else None
    say(0.0, f"exporting {out.name} and checking it against PyTorch")
    done = exporter.export(model, input_shape, images=check, batch=batch, opset=opset, log=log)
    accuracy = None
    if images is not None:
        say(0.8, f"accuracy of {out.name} through onnxruntime")
        accuracy = runtime.accuracy(runtime.session(onnxfile.serialize(done.model)), images.val())
    params, flops = measure.count_params(model), measure.count_flops(model, input_shape)
    onnxfile.set_metadata(done.model, {
        "slimlab.format": onnxfile.FORMAT,
        "precision": "fp32",
        "class_names": class_names,
        "input_size": shape_text(input_shape),
        "mean": list(images.mean) if images is not None else None,
        "std": list(images.std) if images is not None else None,
        "accuracy": f"{accuracy:.6f}" if accuracy is not None else None,
        "params": params,
        "flops": flops,
        "max_abs_diff": f"{done.max_abs_diff:.3g}",
        "checked_on": done.checked_on,
        "slimlab.arch": arch,
        "slimlab.plan": (plan or {}).get("totals") if plan else None,
        "slimlab.meta": meta,
    })
    size = onnxfile.save(done.model, out)
    return {
        "name": out.name, "file": out.name, "format": "fp32", "accuracy": accuracy, "params": params,
        "flops": flops, "size": size, "max_abs_diff": done.max_abs_diff, "checked_on": done.checked_on,
        "opset": done.opset, "batch": done.batch or "dynamic",
    }


QUALITY_KEYS = ("accuracy", "mAP50", "mAP50_95")  # the measured figures an ONNX file's metadata carries


def write_int8(result: Any, fp32_info: onnxfile.OnnxInfo, out: Path) -> dict[str, Any]:
    """Annotate the guarded INT8 model (the fp32 file's metadata, updated) and write it atomically.

    Its measured figures (accuracy, or a detector's mAP50-95, mAP50, P and R) replace the fp32 file's."""
    meta = fp32_info.metadata
    figures = dict(result.figures) or {"accuracy": result.accuracy}
    quality = {k: v for k, v in figures.items() if k in QUALITY_KEYS}  # metadata "precision" is fp32 | int8
    onnxfile.set_metadata(result.model, {k: v for k, v in meta.items()
                                         if k not in ("max_abs_diff", "checked_on", *QUALITY_KEYS)})
    onnxfile.set_metadata(result.model, {
        "precision": "int8",
        **{k: f"{v:.6f}" for k, v in quality.items() if isinstance(v, float)},
        "slimlab.quantization": {**result.settings, "fp32_accuracy": result.fp32_accuracy,
                                 "fp32_figures": result.fp32_figures, "fp32_layers": result.excluded,
                                 "source": Path(fp32_info.path).name},
    })
    size = onnxfile.save(result.model, out)
    return {
        "name": out.name, "file": out.name, "format": "int8", **figures,
        "params": _int(meta.get("params")), "flops": _int(meta.get("flops")), "size": size,
        "fp32_accuracy": result.fp32_accuracy, "fp32_layers": list(result.excluded),
        **{k: result.settings[k] for k in ("method", "samples", "per_channel", "activations")},
    }


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
