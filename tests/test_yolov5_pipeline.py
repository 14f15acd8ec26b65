"""A yolov5: run end to end, offline: train -> sparse -> prune -> finetune -> export -> quantize, and a
run that starts from a checkpoint saved as the repository saves it."""

from __future__ import annotations

import json

import pytest
import torch
from detect_helpers import write_preset
from test_yolov5_models import repository_checkpoint

from engine import checkpoint
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.detect.yolov5.task import REPOSITORY_IOU
from engine.pipeline import Pipeline
from engine.runs import create_run_dir
from engine.trust import Trust

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]

MODEL = {"arch": "yolov5:yolov5n.yaml", "kwargs": {"width": 0.125}}


def run(tmp_path, name, trust=None, **changes):
    spec = load_preset(write_preset(tmp_path, **changes))
    path = create_run_dir(tmp_path / "runs", name)
    prepare_run_dir(path, spec)
    Pipeline(spec, path, trust=trust).run()
    return path, json.loads((path / "summary.json").read_text())


def test_a_yolov5_model_slims_end_to_end(tmp_path, monkeypatch):
    from engine.detect import deploy

    built = []  # the validators that score exported files: by the repository's val.py rules too

    class Spy(deploy.Evaluator):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(deploy, "Evaluator", Spy)
    stages = [{"type": "train"}, {"type": "sparse", "s": 1e-3}, {"type": "sweep", "ratios": [0.0, 0.5], "val_images": 8},
              {"type": "prune", "percent": 0.5}, {"type": "finetune"}, {"type": "export"},
              {"type": "quantize", "samples": 16}]
    path, summary = run(tmp_path, "v5", model=MODEL, stages=stages, latency={"repeats": 3, "warmup": 1, "runs": 1})
    sweep = json.loads((path / "sweep.json").read_text())
    assert [r["ratio"] for r in sweep["rows"]] == [0.0, 0.5] and "mAP50_95" in sweep["rows"][0]
    assert len(built) >= 3  # original.onnx, export.onnx, the quantize stage's scorer
    assert all(k.get("iou") == REPOSITORY_IOU and k.get("validator").__name__ == "RepositoryMatching" for k in built)
    rows = summary["comparison"]
    assert {"train", "sparse", "prune", "finetune", "export.onnx"} <= set(rows)
    for row in rows.values():
        assert {"mAP50", "mAP50_95", "params", "flops", "latency_b1_ms"} <= set(row)
    assert summary["prune"]["flops"] < 0.7 * summary["sparse"]["flops"]
    assert summary["finetune"]["params"] == summary["prune"]["params"] == rows["export.onnx"]["params"]
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if "mAP50_95" in r]
    assert {r["stage"] for r in epochs} == {"train", "sparse", "finetune"}
    # the repository's three loss terms, in training and validation
    assert all({"box_loss", "obj_loss", "cls_loss", "val_obj_loss"} <= set(r) for r in epochs)
    assert any("gamma_lt_1e-2" in r for r in epochs if r["stage"] == "sparse")
    raw = torch.load(path / "weights" / "finetune.pt", weights_only=True)
    assert raw["arch"]["family"] == "yolov5" and raw["plan"]["groups"]
    model = checkpoint.load(path / "weights" / "finetune.pt").model
    assert type(model).__name__ == "Yolov5Detector" and type(model.model[-1]).__module__ == "yolov5.models.yolo"
    assert any(k.endswith(".int8.onnx") for k in rows)


def test_a_run_starts_from_a_repository_checkpoint(tmp_path):
    best = tmp_path / "best.pt"
    repository_checkpoint(best, nc=3, imgsz=64)
    stages = [{"type": "prune", "percent": 0.5}, {"type": "finetune"}]
    # the family is told from the file: no model.arch needed
    path, summary = run(tmp_path, "ckpt", trust=Trust.everything(), model={"checkpoint": str(best)}, stages=stages)
    assert summary["finetune"]["params"] == summary["prune"]["params"] == summary["prune"]["plan_params_after"]
    assert summary["prune"]["plan_params_after"] < summary["prune"]["plan_params_before"]
    assert json.loads((path / "status.json").read_text())["state"] == "done"
