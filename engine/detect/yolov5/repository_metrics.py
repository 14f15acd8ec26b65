"""mAP of a yolov5: model computed by the YOLOv5 repository's own val.py code, to check the validator.

slimlab judges YOLOv5 models with Ultralytics' DetectionValidator (engine/detect/evaluate.py, at
the repository's IoU threshold 0.6) on the model's detections in Ultralytics' layout. This runs the
repository's val.py path on the same letterboxed batches instead: the repository's
`non_max_suppression` on its own Detect output (objectness and class probabilities apart),
`scale_boxes` of predictions and labels to the native image size, `process_batch` at IoU
0.5:0.95 and `ap_per_class`. tests/test_yolov5_metrics.py and benchmarks/detect/yolov5_figures.py
compare the two.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.detect.yolov5 import compat

CONF = 0.001  # val.py's --conf-thres
IOU = 0.6  # val.py's --iou-thres
MAX_DET = 300


def repository_map(model: nn.Module, loader: Any, raw: Any = None) -> dict[str, float]:
    """precision, recall, mAP50 and mAP50-95 as the repository's val.py computes them, on `loader`'s
    batches (an Evaluator's: Ultralytics' letterboxed val dataset). `raw(img)` gives the repository's
    Detect output `(batch, anchors, 5 + classes)`; by default the model's own."""
    compat.load()
    from yolov5.utils.general import non_max_suppression, scale_boxes, xywh2xyxy
    from yolov5.utils.metrics import ap_per_class
    from yolov5.val import process_batch

    from engine.detect.yolov5.model import Yolov5Detector

    if raw is None:
        model = copy.deepcopy(model).cpu().float().eval()
        model.model[-1].export = False

        def raw(img: torch.Tensor) -> torch.Tensor:
            return super(Yolov5Detector, model).forward(img)[0]  # the repository's Detect output
    iouv = torch.linspace(0.5, 0.95, 10)
    stats: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for batch in loader:
            img = batch["img"].float() / 255
            z = raw(img)
            preds = non_max_suppression(z, CONF, IOU, multi_label=True, max_det=MAX_DET)
            h, w = img.shape[2:]
            for si, pred in enumerate(preds):
                idx = batch["batch_idx"] == si
                cls = batch["cls"][idx].view(-1)
                shape, ratio_pad = batch["ori_shape"][si], batch["ratio_pad"][si]
                correct = torch.zeros(len(pred), len(iouv), dtype=torch.bool)
                if len(pred) == 0:
                    if len(cls):
                        stats.append((correct, torch.zeros(0), torch.zeros(0), cls))
                    continue
                predn = pred.clone()
                scale_boxes(img.shape[2:], predn[:, :4], shape, ratio_pad)
                if len(cls):
                    tbox = xywh2xyxy(batch["bboxes"][idx] * torch.tensor([w, h, w, h]))
                    scale_boxes(img.shape[2:], tbox, shape, ratio_pad)
                    correct = process_batch(predn, torch.cat((cls[:, None], tbox), 1), iouv)
                stats.append((correct, pred[:, 4], pred[:, 5], cls))
    if not stats:
        return {"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50_95": 0.0}
    cols = [torch.cat(x, 0).cpu().numpy() for x in zip(*stats, strict=True)]
    if not len(cols[0]) or not cols[0].any():
        return {"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50_95": 0.0}
    names = {int(c): str(int(c)) for c in np.unique(np.concatenate([cols[2], cols[3]]))}  # val.py passes model.names
    _, _, p, r, _, ap, _ = ap_per_class(*cols, names=names)
    ap50, ap = ap[:, 0], ap.mean(1)
    return {"precision": float(np.mean(p)), "recall": float(np.mean(r)), "mAP50": float(ap50.mean()),
            "mAP50_95": float(ap.mean())}


def validator_options() -> dict[str, Any]:
    """The Evaluator settings (engine/detect/evaluate.py) that judge a model by val.py's rules: its IoU
    threshold and the validator below. Every mAP of a yolov5: model, PyTorch or exported, uses them."""
    return {"iou": IOU, "validator": repository_validator()}


def repository_validator() -> type:
    """Ultralytics' DetectionValidator (its data, NMS and matching: the same as the repository's),
    giving the repository's val.py figures where the two differ:
    - predicted boxes are clipped to the image itself before they are matched to the labels (the
      repository's `scale_boxes` to the native size clips them; Ultralytics matches them unclipped
      in the letterboxed frame, where a box reaching into the padding scores a lower IoU);
    - AP, P and R come from the repository's `ap_per_class`: its precision envelope runs on from the
      last recall to recall 1 (Ultralytics 8.4's drops to 0 right after the last recall, which gives
      a lower AP for the same detections)."""
    compat.load()
    from ultralytics.models.yolo.detect import DetectionValidator
    from yolov5.utils.metrics import ap_per_class

    class RepositoryMatching(DetectionValidator):
        def get_stats(self) -> dict[str, Any]:
            self.metrics.process(save_dir=self.save_dir, plot=False)  # Ultralytics' own, then the repository's AP
            stats = {k: np.concatenate(v, 0) for k, v in self.metrics.stats.items() if len(v)}
            box = self.metrics.box
            if len(stats.get("tp", ())) and stats["tp"].any():
                names = {int(c): str(int(c)) for c in np.unique(np.concatenate([stats["pred_cls"], stats["target_cls"]]))}
                _, _, p, r, f1, ap, classes = ap_per_class(stats["tp"], stats["conf"], stats["pred_cls"],
                                                           stats["target_cls"], names=names)
                box.p, box.r, box.f1, box.all_ap, box.ap_class_index = p, r, f1, ap, classes.astype(int)
            results = self.metrics.results_dict
            self.metrics.clear_stats()
            return results

        def update_metrics(self, preds: list[dict[str, torch.Tensor]], batch: dict[str, Any]) -> None:
            for si, pred in enumerate(preds):
                if len(pred["bboxes"]):
                    # the repository maps boxes to the native image with one gain (ratio_pad[0][0]) and
                    # clips them there: the same clip, in the letterboxed frame
                    (gain, _), (pad_x, pad_y) = batch["ratio_pad"][si]
                    h0, w0 = batch["ori_shape"][si][:2]
                    b = pred["bboxes"].clone()
                    b[:, [0, 2]] = b[:, [0, 2]].clamp(pad_x, pad_x + w0 * gain)
                    b[:, [1, 3]] = b[:, [1, 3]].clamp(pad_y, pad_y + h0 * gain)
                    pred["bboxes"] = b
            super().update_metrics(preds, batch)

    return RepositoryMatching
