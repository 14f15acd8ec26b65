"""Preset checks for `task: detect` (torch- and Ultralytics-free, like the rest of preset validation)."""

from __future__ import annotations

from typing import Any

from engine.errors import PresetError

PREFIX = "ultralytics:"
DATASETS = ("yolo", "yolo_shapes")  # a YOLO dataset yaml; generated shapes with boxes, written into the run


def check_detect_names(spec: Any, source: str) -> None:
    """task: detect needs an ultralytics: model (or a checkpoint) and a YOLO dataset yaml."""
    models = [("model", spec.model)] + [(f"stages[{i}].model", s.model) for i, s in enumerate(spec.stages) if s.model]
    for key, m in models:
        if m.checkpoint is None and not m.arch.startswith(PREFIX):
            raise PresetError(
                f"{source}: {key}.arch: task detect builds Ultralytics models: {PREFIX}<model yaml> "
                f"(e.g. {PREFIX}yolov8n.yaml), or set {key}.checkpoint to an Ultralytics or slimlab checkpoint"
            )
    for i, stage in enumerate(spec.stages):
        if stage.type == "export" and stage.formats:
            from engine.detect.formats import unavailable

            reasons = [r for r in (unavailable(f) for f in stage.formats) if r]
            if reasons:
                raise PresetError(f"{source}: stages[{i}].formats: " + "; ".join(reasons))
    if spec.data.dataset not in DATASETS:
        raise PresetError(
            f"{source}: data.dataset: task detect reads YOLO-format data: dataset: yolo with path: <data.yaml>, "
            "or dataset: yolo_shapes (generated)"
        )
