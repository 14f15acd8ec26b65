"""mAP of a detection model on the validation images, by Ultralytics' own DetectionValidator.

The validator runs in its training-time mode (model, device and data handed over, nothing loaded
or downloaded), which also gives the validation box/cls/dfl losses.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from engine.detect import ultra
from engine.detect.data import YoloData
from engine.detect.model import quiet

METRIC_KEYS = {  # Ultralytics' names -> slimlab's metrics.jsonl names
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50_95",
    "val/box_loss": "val_box_loss",
    "val/cls_loss": "val_cls_loss",
    "val/dfl_loss": "val_dfl_loss",
    "val/obj_loss": "val_obj_loss",  # the YOLOv5 repository's objectness loss (engine/detect/yolov5)
}
DEFAULT_LOSS_NAMES = ("box_loss", "cls_loss", "dfl_loss")  # a model's own `loss_names` wins


def slim_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Ultralytics' validation dict in slimlab's names (unknown keys dropped)."""
    return {METRIC_KEYS[k]: float(v) for k, v in (metrics or {}).items() if k in METRIC_KEYS}


def ultralytics_args(**overrides: Any) -> Any:
    """Ultralytics' default settings with `overrides`, never plotting (plots fetch fonts)."""
    ultra.load()
    from ultralytics.cfg import get_cfg

    return get_cfg(overrides={"plots": False, "verbose": False, **overrides})


def family_options(arch: Any) -> dict[str, Any]:
    """The Evaluator settings of a model's detection family, told from its arch record (a checkpoint's,
    or an ONNX file's `slimlab.arch`): the YOLOv5 repository's val.py rules for its models, so a file is
    judged as the model it came from; Ultralytics' defaults otherwise."""
    if isinstance(arch, dict) and arch.get("family") == "yolov5":
        from engine.detect.yolov5.repository_metrics import validator_options

        return validator_options()
    return {}


class Evaluator:
    """Validates models on one dataset split at one image size; the dataloader is built once."""

    def __init__(self, data: YoloData, *, imgsz: int, batch: int, device: torch.device, work_dir: Path,
                 images: list[str] | None = None, workers: int = 0, rect: bool = True, iou: float | None = None,
                 validator: type | None = None):
        ultra.load()
        from ultralytics.data import build_dataloader, build_yolo_dataset

        self.data = data
        self.device = device
        self.validator = validator  # a DetectionValidator subclass (a family's own matching), else Ultralytics'
        self.work_dir = Path(work_dir)
        # rect: each batch letterboxed to its own aspect ratio (Ultralytics' val default); a model with a
        # fixed input size (an exported file) gets square imgsz x imgsz images
        self.args = ultralytics_args(task="detect", mode="val", imgsz=imgsz, batch=batch, workers=workers,
                                     device=str(device), rect=rect, half=False,
                                     **({} if iou is None else {"iou": iou}))
        self.data_dict = data.ultralytics_dict()
        source: Any = self.data_dict["val"]
        if images is not None:  # a subset: Ultralytics reads a .txt list of image paths
            self.work_dir.mkdir(parents=True, exist_ok=True)
            listing = self.work_dir / "val_subset.txt"
            listing.write_text("".join(f"{p}\n" for p in images))
            source = str(listing)
        with quiet(), ultra.one_process():
            dataset = build_yolo_dataset(self.args, source, batch, self.data_dict, mode="val", rect=rect, stride=32)
            self.loader = build_dataloader(dataset, batch, workers, shuffle=False, rank=-1)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        model = copy.deepcopy(model).to(self.device).float().eval()
        model.args = self.args  # the loss gains (box, cls, dfl) the validation losses use
        model.criterion = None
        return self.run(model)

    def run(self, model: nn.Module) -> dict[str, float]:
        """Validate `model` as it is: something the validator calls on image batches, with `names` and
        `loss(batch, preds)` (a DetectionModel, or an exported file behind the same interface)."""
        from ultralytics.models.yolo.detect import DetectionValidator

        zero = torch.zeros((), device=self.device)
        names = getattr(model, "loss_names", None) or DEFAULT_LOSS_NAMES
        trainer = SimpleNamespace(
            ema=SimpleNamespace(ema=model), model=model, device=self.device, data=self.data_dict, amp=False,
            loss_items=dict.fromkeys(names, zero),
            stopper=SimpleNamespace(possible_stop=False), epoch=0, epochs=1, world_size=1,
            label_loss_items=lambda loss, prefix="val": {f"{prefix}/{k}": float(v) for k, v in loss.items()},
        )
        validator = (self.validator or DetectionValidator)(self.loader, save_dir=self.work_dir, args=copy.copy(self.args))
        with quiet(), ultra.one_process():  # one rank measures alone, also under torchrun
            metrics = validator(trainer=trainer)
        return slim_metrics(metrics)


def val_subset(data: YoloData, n: int | None, split: str = "val") -> list[str] | None:
    """The first `n` images of a split (sorted paths: the same subset every time), or None for all."""
    if not n:
        return None
    from engine.detect.data import IMAGE_SUFFIXES

    images: list[str] = []
    for src in data.splits[split].sources:
        p = Path(src)
        if p.is_dir():
            images += sorted(str(x) for x in p.rglob("*") if x.suffix.lower() in IMAGE_SUFFIXES)
        else:
            images += [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    return images[:n]
