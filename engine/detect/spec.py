"""Preset checks for `task: detect` (torch- and Ultralytics-free, like the rest of preset validation)."""

from __future__ import annotations

from typing import Any

from engine.errors import PresetError

PREFIX = "ultralytics:"
YOLOV5_PREFIX = "yolov5:"
# what a YOLOv5-repository checkpoint's pickle imports (its train.py runs from the repository root),
# and the package's own names
YOLOV5_MODULES = ("models.yolo.", "models.common.", "yolov5.models.")
DATASETS = ("yolo", "yolo_shapes")  # a YOLO dataset yaml; generated shapes with boxes, written into the run


def check_detect_names(spec: Any, source: str) -> None:
    """task: detect needs an ultralytics: model (or a checkpoint) and a YOLO dataset yaml."""
    models = [("model", spec.model)] + [(f"stages[{i}].model", s.model) for i, s in enumerate(spec.stages) if s.model]
    for key, m in models:
        if m.checkpoint is None and not m.arch.startswith((PREFIX, YOLOV5_PREFIX)):
            raise PresetError(
                f"{source}: {key}.arch: task detect builds Ultralytics models: {PREFIX}<model yaml> "
                f"(e.g. {PREFIX}yolov8n.yaml), or YOLOv5-repository models: {YOLOV5_PREFIX}<model yaml> "
                f"(e.g. {YOLOV5_PREFIX}yolov5s.yaml), or set {key}.checkpoint to an Ultralytics, YOLOv5 or "
                "slimlab checkpoint"
            )
    for i, stage in enumerate(spec.stages):
        if stage.type == "export" and stage.formats:
            from engine.detect.formats import unavailable

            reasons = [r for r in (unavailable(f) for f in stage.formats) if r]
            if reasons:
                raise PresetError(f"{source}: stages[{i}].formats: " + "; ".join(reasons))
    _check_training_keys(spec, source)
    if spec.data.dataset not in DATASETS:
        raise PresetError(
            f"{source}: data.dataset: task detect reads YOLO-format data: dataset: yolo with path: <data.yaml>, "
            "or dataset: yolo_shapes (generated)"
        )


# training keys of classification's loop that Ultralytics' trainer does its own way: refused, not ignored
# (the value that changes nothing, why)
TRAINER_OWN = {
    "accumulate": (1, "detection training accumulates gradients to Ultralytics' nominal batch of 64 images "
                      "(an optimizer step every 64 / batch_size batches); set batch_size instead"),
    "clip_norm": (None, "detection training clips gradients at norm 10, as Ultralytics' trainer does"),
    "sync_bn": (False, "detection training under torchrun keeps Ultralytics' BatchNorm as it is"),
}


def _check_training_keys(spec: Any, source: str) -> None:
    sections = [("training", spec.training)] + [(f"stages[{i}].training", s.training) for i, s in enumerate(spec.stages)]
    for where, training in sections:
        for key, (harmless, why) in TRAINER_OWN.items():
            value = getattr(training, key, harmless)
            if key in training.model_fields_set and value is not None and value != harmless:
                raise PresetError(f"{source}: {where}.{key}: {why}; remove {key} from a task: detect preset")


def family(model: Any) -> str:
    """`yolov5` or `ultralytics`: the detection family of a preset's model. The arch prefix says it;
    a checkpoint without one is told from its pickle's names, read without unpickling (a YOLOv5-repository
    best.pt imports `models.yolo`, a slimlab checkpoint of the family names its `yolov5:` arch)."""
    if model.arch.startswith(YOLOV5_PREFIX):
        return "yolov5"
    if model.arch.startswith(PREFIX) or model.checkpoint is None:
        return "ultralytics"
    return "yolov5" if file_family(model.checkpoint) == "yolov5" else "ultralytics"


def file_family(path: Any) -> str | None:
    """`yolov5`, `ultralytics` or None (not told, or not a readable file) for a detection checkpoint."""
    import pickletools
    import zipfile
    from pathlib import Path

    from engine import sniff

    path = Path(path)
    try:
        kind = sniff.sniff(path)
        if kind.kind != "zip" or not kind.pickle_name:
            return None
        with zipfile.ZipFile(path) as z:
            data = z.read(kind.pickle_name)
        check = sniff.pickle_check(path, kind)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    names = check.globals if check.well_formed else []
    if any(n.startswith(YOLOV5_MODULES) for n in names):
        return "yolov5"
    if any(n.startswith("ultralytics.") for n in names):
        return "ultralytics"
    try:  # a slimlab checkpoint: its arch name is a string in the pickle
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and arg.startswith((YOLOV5_PREFIX, PREFIX)) and op.name in sniff.STRING_OPS:
                return "yolov5" if arg.startswith(YOLOV5_PREFIX) else "ultralytics"
    except ValueError:
        return None
    return None
