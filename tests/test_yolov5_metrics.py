"""Ultralytics' validator (what slimlab reports for yolov5: models) gives the mAP the YOLOv5
repository's own val.py code gives, on the same detections of the same letterboxed val images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.detect import data as ydata
from engine.detect.evaluate import Evaluator
from engine.detect.synth import write_dataset

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]


class Replay(nn.Module):
    """Replays prepared repository-layout Detect outputs, batch after batch: the validator gets
    them in Ultralytics' layout (objectness x class), the repository's code as they are."""

    def __init__(self, outputs: list[torch.Tensor], nc: int):
        super().__init__()
        self.outputs, self.i = outputs, 0
        self.names = {i: str(i) for i in range(nc)}
        self.nc = nc
        self.loss_names = ("box_loss", "obj_loss", "cls_loss")

    def next(self) -> torch.Tensor:
        z = self.outputs[self.i % len(self.outputs)]
        self.i += 1
        return z

    def forward(self, img: torch.Tensor, *args, **kwargs):
        from engine.detect.yolov5.model import detections

        return detections(self.next()), None

    def loss(self, batch, preds=None):
        zero = torch.zeros(())
        return zero, dict.fromkeys(self.loss_names, zero)


def noisy_detections(loader, nc: int, seed: int = 0) -> list[torch.Tensor]:
    """Per batch: every labelled box jittered (a few pixels, sometimes a lot), with a confidence and
    class probabilities that are sometimes wrong, plus random false boxes; repository layout."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for batch in loader:
        bs, _, h, w = batch["img"].shape
        rows = []
        for si in range(bs):
            idx = batch["batch_idx"] == si
            boxes = batch["bboxes"][idx] * torch.tensor([w, h, w, h])
            cls = batch["cls"][idx].view(-1).long()
            n_false = 5
            fake = torch.rand(n_false, 4, generator=g) * torch.tensor([w, h, w / 2, h / 2]) + 2
            size = boxes[:, 2:].repeat(1, 2)
            boxes = torch.cat([boxes + 0.04 * size * torch.randn(len(boxes), 4, generator=g), fake])
            labels = torch.cat([cls, torch.randint(0, nc, (n_false,), generator=g)])
            flip = torch.rand(len(labels), generator=g) < 0.2
            labels = torch.where(flip, torch.randint(0, nc, labels.shape, generator=g), labels)
            obj = torch.rand(len(labels), 1, generator=g) * 0.9 + 0.05
            probs = torch.rand(len(labels), nc, generator=g) * 0.3
            probs[torch.arange(len(labels)), labels] = 0.5 + 0.5 * torch.rand(len(labels), generator=g)
            rows.append(torch.cat([boxes, obj, probs], 1))
        width = max(len(r) for r in rows)
        padded = [torch.cat([r, torch.zeros(width - len(r), 5 + nc)]) for r in rows]  # obj 0: never kept
        out.append(torch.stack(padded))
    return out


def test_ultralytics_validator_gives_the_repository_val_numbers(tmp_path):
    from engine.detect.yolov5.repository_metrics import repository_map, repository_validator
    from engine.detect.yolov5.task import REPOSITORY_IOU

    nc = 3
    write_dataset(tmp_path / "d", train=16, val=48, classes=nc, seed=0)
    data = ydata.load(tmp_path / "d" / "data.yaml")
    evaluator = Evaluator(data, imgsz=64, batch=8, device=torch.device("cpu"), work_dir=tmp_path / "v",
                          iou=REPOSITORY_IOU, validator=repository_validator())
    plain = Evaluator(data, imgsz=64, batch=8, device=torch.device("cpu"), work_dir=tmp_path / "p", iou=REPOSITORY_IOU)
    # val letterboxes 64 px images into 96 px batches (rect, pad 0.5): boxes reach into the padding
    outputs = noisy_detections(evaluator.loader, nc)
    ours, unclipped = evaluator.run(Replay(outputs, nc)), plain.run(Replay(outputs, nc))
    replay = Replay(outputs, nc)
    theirs = repository_map(replay, evaluator.loader, raw=lambda img: replay.next())
    assert 0.1 < theirs["mAP50_95"] < 0.9 and theirs["mAP50"] > theirs["mAP50_95"]  # a figure that can differ
    for key in ("mAP50", "precision", "recall"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key  # Ultralytics rounds to 5 decimals
    # the repository matches in the native frame (one gain for both axes), the validator in the
    # letterboxed one: IoUs at the strict thresholds differ in the last bits
    assert ours["mAP50_95"] == pytest.approx(theirs["mAP50_95"], abs=5e-4)
    # Ultralytics' own AP (its envelope drops to 0 after the last recall) and unclipped boxes are lower
    assert theirs["mAP50_95"] - unclipped["mAP50_95"] > 2e-3 and theirs["mAP50"] - unclipped["mAP50"] > 5e-4
