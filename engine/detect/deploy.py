"""Deploying a detection model: a checked ONNX file with its mAP through onnxruntime, and an Ultralytics .pt.

ONNX: the model in its inference form (the Detect head's `export` switch) has one output, the
decoded detections `(batch, 4 + classes, anchors)`: box centre x, y, width and height in input
pixels, then the class scores (before NMS, as Ultralytics exports it), for square images of the
size it was exported at (the batch may be dynamic). engine/deploy/export.py captures and translates
it and keeps it only if onnxruntime reproduces PyTorch on real validation images, letterboxed as
Ultralytics does; the boxes within
`BOX_TOLERANCE` of the image size, the scores within `SCORE_TOLERANCE`, both plus `RELATIVE_TOLERANCE`
of the value. Its mAP is measured by
Ultralytics' validator on onnxruntime's outputs. Beside slimlab's metadata the file carries the keys
Ultralytics' AutoBackend reads (stride, task, imgsz, names, batch), so `YOLO("model.onnx")`
validates and predicts with it.

Ultralytics .pt: the (pruned) DetectionModel as Ultralytics itself saves it (a pickle, what
`YOLO("x.pt")` and the `yolo` CLI load), with slimlab's own attributes removed.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.detect import ultra
from engine.detect.data import YoloData
from engine.detect.evaluate import Evaluator, family_options
from engine.errors import DeployError

BOX_TOLERANCE = 1e-4  # of the image size, on box coordinates in pixels (0.064 px at 640)
SCORE_TOLERANCE = 1e-3  # on class scores in [0, 1]
RELATIVE_TOLERANCE = 1e-4  # of |PyTorch's value| on top: float32 rounding of boxes hundreds of pixels wide
CHECK_IMAGES = 32
PROBE_PIXELS = 32 * 256 * 256  # the INT8 guard compares outputs on this many pixels of calibration images


def probe_images(imgsz: int) -> int:
    """Calibration images the INT8 guard compares outputs on: 32 up to 256 px, 5 at 640 (a detector's
    thousands of anchors per image say plenty, and every candidate node is probed on them)."""
    return max(4, min(32, PROBE_PIXELS // (imgsz * imgsz)))
# attributes slimlab sets on a DetectionModel (engine/detect/model.py `finish`); a plain Ultralytics
# model has none of them
SLIMLAB_ATTRS = ("input_size", "size_multiple", "default_ignore", "inference_settings", "width_attributes")


def inference_form(model: nn.Module) -> nn.Module:
    """A CPU fp32 eval copy of `model` returning only its detections (its `inference_settings` set)."""
    out = copy.deepcopy(model).cpu().float().eval()
    for name, attrs in (getattr(out, "inference_settings", None) or {}).items():
        for attr, value in attrs.items():
            setattr(out.get_submodule(name), attr, value)
    return out


def check_detection_file(info: Any, where: str, classes: int | None = None, *, unlabelled: bool = False) -> int:
    """The square input side of a detection ONNX file (slimlab's or Ultralytics' export, which record
    task detect; `unlabelled`: a file with no metadata the user says is a detector); DeployError else."""
    task = info.metadata.get("task")
    if task != "detect" and not unlabelled:
        what = "a classification model" if info.metadata.get("class_names") else "not a file slimlab exported"
        raise DeployError(f"{where} is {what} (no detection metadata); a detection run quantizes the ONNX file "
                          "of its own export stage")
    chw = info.chw
    if not chw or chw[1] != chw[2]:
        raise DeployError(f"{where}: its input is not a square image ({info.input_shape}); export it again")
    names = info.metadata.get("class_names")
    if classes is not None and isinstance(names, list) and len(names) != classes:
        raise DeployError(f"{where} detects {len(names)} classes but the data has {classes}")
    return int(chw[1])


def letterboxed(data: YoloData, split: str, imgsz: int, n: int) -> Any:
    """Ultralytics' dataset of `split` (val or train) as an exported model takes it: each image
    letterboxed to imgsz x imgsz, RGB, uint8, no augmentation, in Ultralytics' (sorted) file order."""
    ultra.load()
    from ultralytics.data import build_yolo_dataset

    from engine.detect.evaluate import ultralytics_args
    from engine.detect.model import quiet

    args = ultralytics_args(task="detect", mode="val", imgsz=imgsz, rect=False)
    with quiet():
        return build_yolo_dataset(args, data.ultralytics_dict()[split], max(1, min(n, 32)), data.ultralytics_dict(),
                                  mode="val", rect=False, stride=32)


def check_images(data: YoloData, imgsz: int, n: int = CHECK_IMAGES) -> torch.Tensor:
    """The first `n` validation images letterboxed to imgsz x imgsz as Ultralytics does, in [0, 1]."""
    dataset = letterboxed(data, "val", imgsz, n)
    count = min(n, len(dataset))
    if not count:
        raise DeployError(f"{data.yaml_path}: the validation split has no images to check the export on")
    return torch.stack([dataset[i]["img"] for i in range(count)]).float() / 255.0


def calibration_batches(data: YoloData, imgsz: int, samples: int) -> tuple[list[np.ndarray], int]:
    """(batches, images available): the first `samples` training images (the same ones every time),
    prepared exactly as the exported model expects them (letterboxed, RGB, /255), as float32
    batches small enough that the calibrator's intermediate tensors stay a few hundred MB."""
    dataset = letterboxed(data, "train", imgsz, samples)
    available = len(dataset)
    count = min(samples, available)
    if not count:
        raise DeployError(f"{data.yaml_path}: the training split has no images to calibrate INT8 on")
    batch = max(1, min(32, (256 * 256 * 16) // (imgsz * imgsz)))  # 16 images at 256 px, 2 at 640
    out = []
    for start in range(0, count, batch):
        imgs = [dataset[i]["img"].numpy() for i in range(start, min(count, start + batch))]
        out.append(np.ascontiguousarray(np.stack(imgs), dtype=np.float32) / 255.0)
    return out, available


def detection_sqnr(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """How close quantized detections stay to fp32's, in dB: the worse of the box rows (pixels) and the
    class-score rows ([0, 1]) of the (batch, 4 + classes, anchors) output, each its own
    signal-to-noise ratio, so boxes hundreds of pixels large do not hide scores that fell to zero."""
    from engine.deploy.guard import sqnr_db

    boxes = sqnr_db([r[:, :4] for r in reference], [g[:, :4] for g in got])
    scores = sqnr_db([r[:, 4:] for r in reference], [g[:, 4:] for g in got])
    return min(boxes, scores)


def onnx_scorer(data: YoloData, imgsz: int, work_dir: Path, *, batch: int = 16,
                options: dict[str, Any] | None = None) -> Callable[[Any], dict[str, float]]:
    """score(ONNX file or bytes) -> precision, recall, mAP50, mAP50-95 on the val split through
    onnxruntime, by the rules of the model's family (`options`: engine/detect/evaluate.py
    `family_options`); the validator's dataloader is built once for every file it scores."""
    from engine.deploy import runtime

    evaluator = Evaluator(data, imgsz=imgsz, batch=batch, device=torch.device("cpu"), work_dir=work_dir, rect=False,
                          **(options or {}))
    names = dict(enumerate(data.names))

    def score(model: Any) -> dict[str, float]:
        figures = evaluator.run(OnnxDetector(runtime.session(model), names))
        return {k: v for k, v in figures.items() if not k.startswith("val_")}

    return score


def box_extent(model: nn.Module, imgsz: int) -> float:
    """The scale box coordinates are compared at: the image size, or the largest box the model's head
    can output where it says so (an anchor-based YOLOv5 head's boxes reach 4 x its largest anchor)."""
    extent = getattr(model, "box_extent", None)
    return max(float(imgsz), float(extent())) if callable(extent) else float(imgsz)


def tolerances(imgsz: float, num_classes: int) -> np.ndarray:
    """Per-output-row tolerance for the (batch, 4 + classes, anchors) detections."""
    tol = np.full((1, 4 + num_classes, 1), SCORE_TOLERANCE, dtype=np.float64)
    tol[:, :4] = max(SCORE_TOLERANCE, BOX_TOLERANCE * imgsz)
    return tol


class OnnxDetector(nn.Module):
    """An exported detection model behind what Ultralytics' validator calls: images in, detections out."""

    def __init__(self, session: Any, names: dict[int, str]) -> None:
        super().__init__()
        self.session = session
        self.names = names

    def forward(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        from engine.deploy import runtime

        return torch.from_numpy(runtime.predict(self.session, x.detach().cpu().float().numpy()))

    def loss(self, batch: dict, preds: Any) -> tuple[None, dict[str, torch.Tensor]]:
        """No training loss through an exported file: the validator's loss terms stay zero."""
        zero = torch.zeros(())
        return None, {"box_loss": zero, "cls_loss": zero, "dfl_loss": zero}


def onnx_map(model_bytes: bytes, data: YoloData, imgsz: int, work_dir: Path, *, batch: int = 16,
             options: dict[str, Any] | None = None) -> dict[str, float]:
    """precision, recall, mAP50, mAP50-95 of an exported file through onnxruntime, on the validation
    images letterboxed to its square input size."""
    return onnx_scorer(data, imgsz, work_dir, batch=batch, options=options)(model_bytes)


def ultralytics_metadata(model: nn.Module, imgsz: int, batch: int | None) -> dict[str, str]:
    """The metadata keys Ultralytics' AutoBackend reads from an ONNX file (values as Python literals)."""
    names = {int(k): str(v) for k, v in dict(model.names).items()}
    return {
        "description": f"slimlab export of an Ultralytics {Path(str(model.yaml.get('yaml_file', 'YOLO'))).stem} model",
        "stride": str(int(max(model.stride.tolist()))),
        "task": "detect",
        "batch": str(batch or 1),
        "imgsz": repr([imgsz, imgsz]),
        "names": repr(names),
        "channels": str(int(model.yaml.get("channels", 3))),
        "args": repr({"batch": batch or 1, "dynamic": batch is None, "half": False, "nms": False, "imgsz": imgsz}),
        "end2end": str(bool(getattr(model.model[-1], "end2end", False))),
    }


def export_onnx(
    model: nn.Module,
    out: Path,
    *,
    data: YoloData | None,
    imgsz: int,
    batch: int | None = None,
    opset: int = 18,
    arch: dict | None = None,
    plan: dict | None = None,
    meta: dict | None = None,
    work_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Export, check, measure mAP through onnxruntime, annotate, write `out` atomically; the artifact record.

    Without `data` the check runs on random inputs (and says so) and no mAP is measured.
    """
    from engine import measure
    from engine.deploy import export as exporter
    from engine.deploy import onnxfile
    from engine.deploy.artifacts import shape_text

    say = progress or (lambda fraction, what: None)
    if imgsz % 32:
        raise DeployError(f"image size {imgsz}: a detection model takes a multiple of 32 (its largest stride)")
    shape = (int(getattr(model, "input_size", (3,))[0]), imgsz, imgsz)
    deployed = inference_form(model)
    head = deployed.model[-1]
    # a dynamic batch: anchors computed in the graph (Ultralytics' own switch for dynamic exports),
    # as a cached shape compared in Python would fix the batch size
    head.dynamic, head.shape = batch is None, None
    check = check_images(data, imgsz) if data is not None else None
    say(0.0, f"exporting {out.name} and checking it against PyTorch")
    done = exporter.export(deployed, shape, images=check, images_label="validation images (letterboxed)", batch=batch,
                           opset=opset, tolerance=tolerances(box_extent(model, imgsz), int(model.nc)),
                           rtol=RELATIVE_TOLERANCE, log=log)
    figures: dict[str, float] = {}
    if data is not None:
        say(0.6, f"mAP of {out.name} through onnxruntime")
        figures = onnx_map(onnxfile.serialize(done.model), data, imgsz, work_dir or out.parent / "ultralytics" / "onnx",
                           batch=batch or 16, options=family_options(arch))
    params, flops = measure.count_params(deployed), measure.count_flops(deployed, shape)
    names = [str(model.names[i]) for i in range(int(model.nc))]
    onnxfile.set_metadata(done.model, {
        "slimlab.format": onnxfile.FORMAT, "precision": "fp32", "task": "detect", "class_names": names,
        "input_size": shape_text(shape), "mean": [0.0] * shape[0], "std": [1.0] * shape[0],
        "mAP50": _text(figures.get("mAP50")), "mAP50_95": _text(figures.get("mAP50_95")),
        "params": params, "flops": flops, "max_abs_diff": f"{done.max_abs_diff:.3g}", "checked_on": done.checked_on,
        "outputs": "detections (batch, 4 + classes, anchors): box cx, cy, w, h in input pixels, then class scores; before NMS",
        "slimlab.arch": arch, "slimlab.plan": (plan or {}).get("totals") if plan else None, "slimlab.meta": meta,
        **ultralytics_metadata(model, imgsz, batch),
    })
    size = onnxfile.save(done.model, out)
    return {
        "name": out.name, "file": out.name, "format": "fp32", **figures,
        "params": params, "flops": flops, "size": size, "max_abs_diff": done.max_abs_diff,
        "checked_on": done.checked_on, "opset": done.opset, "batch": done.batch or "dynamic", "imgsz": imgsz,
        "input_shape": list(shape),
    }


def _text(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"


def ultralytics_checkpoint(model: nn.Module, *, imgsz: int, data: Path | None = None, meta: dict | None = None) -> dict:
    """What Ultralytics saves as a checkpoint, for `model`: a plain DetectionModel, fp32, in eval mode.

    slimlab's attributes are removed and the split sizes follow the cut (engine/slim/cut.py), so the
    model is what Ultralytics would have built with these widths. `train_args` hold imgsz, task and,
    when known, the dataset yaml, which `yolo val model=x.pt` then uses by default.
    """
    ultra.load()
    import ultralytics

    from engine.slim.cut import sync_widths

    plain = copy.deepcopy(model).cpu().float().eval()
    sync_widths(plain)
    for attr in SLIMLAB_ATTRS:
        plain.__dict__.pop(attr, None)
    for m in plain.modules():
        m.__dict__.pop("export", None)  # the class default (False): the eval output Ultralytics expects
    plain.requires_grad_(False)
    args = {"task": "detect", "mode": "train", "imgsz": int(imgsz), "model": str(plain.yaml.get("yaml_file", "model.yaml"))}
    if data is not None:
        args["data"] = str(data)
    return {
        "date": datetime.datetime.now().isoformat(), "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
        "epoch": -1, "best_fitness": None, "model": plain, "ema": None, "updates": None, "optimizer": None,
        "train_args": args, "train_metrics": {}, "train_results": {}, "slimlab": meta or {},
    }


def save_ultralytics(model: nn.Module, out: Path, *, imgsz: int, data: Path | None = None, meta: dict | None = None) -> int:
    """Write `ultralytics_checkpoint(...)` to `out` atomically; its size in bytes."""
    from engine.atomic import atomic_file

    ckpt = ultralytics_checkpoint(model, imgsz=imgsz, data=data, meta=meta)
    with atomic_file(out, durable=True) as f:
        torch.save(ckpt, f)
    return out.stat().st_size
