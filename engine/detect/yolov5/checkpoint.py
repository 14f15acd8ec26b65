"""YOLOv5-repository checkpoint files: reading a trusted best.pt/last.pt, writing one back.

The repository's train.py saves `torch.save({'epoch', 'best_fitness', 'model': <DetectionModel, fp16>,
'ema': <its EMA, fp16>, 'updates', 'optimizer', 'opt': vars(opt), 'git', 'date'})`: a pickle of the
repository's classes under their top-level names (`models.yolo.DetectionModel`). Reading maps those
names onto the package (engine/detect/yolov5/compat.py); writing (`slimlab export --format yolov5`)
stores a (pruned) model the same way, the slimlab-only parts removed, so the repository's
`attempt_load` (its val.py, detect.py, export.py) and the PyPI package load it.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.atomic import atomic_file
from engine.detect.yolov5 import compat
from engine.errors import CheckpointError, PresetError

# attributes slimlab sets on the model (engine/detect/yolov5/model.py `finish`, the loss); a model the
# repository saved has none of them
SLIMLAB_ATTRS = ("input_size", "size_multiple", "default_ignore", "inference_settings", "width_attributes",
                 "base_hyp", "criterion", "args")


def read_repository_pickle(path: Path) -> Any:
    """torch.load of a trusted repository checkpoint, its classes resolved in the package (or a
    CheckpointError naming a class outside the releases slimlab reads)."""
    module = compat.unpickler_module(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    except CheckpointError:
        raise
    except Exception as e:  # arbitrary unpickling failures of a file from another release
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: unpickling this YOLOv5 checkpoint failed ({type(e).__name__}: {text}); "
                              f"slimlab reads checkpoints of {compat.VERSION_RANGE}") from None


def repository_model(model: nn.Module) -> nn.Module:
    """A CPU fp16 copy of `model` as the repository's own DetectionModel class, slimlab's attributes removed."""
    from yolov5.models.yolo import DetectionModel

    out = copy.deepcopy(model).cpu().float().eval()
    for name in SLIMLAB_ATTRS:
        if name in vars(out):
            delattr(out, name)
    out.__class__ = DetectionModel
    out.names = [model.names[i] for i in range(int(model.nc))]  # a list, as the repository's train.py stores it
    out.hyp = dict(getattr(model, "base_hyp", None) or {})
    for m in out.modules():  # the grids are rebuilt at the first forward, as after the repository's own load
        if hasattr(m, "anchor_grid") and isinstance(m.anchor_grid, list):
            m.grid = [torch.empty(0) for _ in m.grid]
            m.anchor_grid = [torch.empty(0) for _ in m.anchor_grid]
            m.export = False
    return out.half()


def save_repository(model: nn.Module, out: Path, *, imgsz: int, meta: dict | None = None,
                    plan: dict | None = None) -> int:
    """Write `model` as the repository's train.py writes a finished best.pt (EMA folded into `model`,
    no optimizer); returns the file size. A pruned model's `plan` rides along as plain data under
    `slimlab` (the repository reads only `ema`/`model`), so slimlab reads the file back as the
    pruned model (its yaml describes the unpruned one)."""
    if not type(model).__module__.startswith("engine.detect.yolov5"):
        raise PresetError(f"--format yolov5 writes YOLOv5-repository checkpoints; {type(model).__name__} is not a "
                          "yolov5: model (an Ultralytics model exports with --format ultralytics)")
    saved = repository_model(model)
    hyp = dict(saved.hyp)
    ckpt = {
        "epoch": -1, "best_fitness": None, "model": saved, "ema": None, "updates": None, "optimizer": None,
        "opt": {"imgsz": int(imgsz), "hyp": hyp, "slimlab": {k: v for k, v in (meta or {}).items()
                                                               if isinstance(v, str | int | float)}},
        "git": None, "date": datetime.datetime.now().isoformat(), "slimlab": {"plan": plan},
    }  # fmt: skip
    with atomic_file(out, "wb", durable=True) as f:  # a crash never leaves half a file
        torch.save(ckpt, f, pickle_module=compat.pickler_module())
    return out.stat().st_size
