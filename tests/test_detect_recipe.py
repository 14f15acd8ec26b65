"""The detection recipe: s: auto with the pruned-at-target mAP per sparse epoch, BatchNorm recalibration
of cut detectors, and distillation from the unpruned detector (logit, box and feature terms), with
cancel/resume and the bad inputs named."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from detect_helpers import randomise_bn, write_preset
from torch import nn

from engine import checkpoint
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.errors import Cancelled, DistillError, PresetError
from engine.pipeline import Pipeline
from engine.runs import create_run_dir

from helpers import StopAfter

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]

TRAIN = {"epochs": 2, "batch_size": 8, "optimizer": "adamw", "lr": 0.004, "warmup_epochs": 0}


def start(tmp_path, stages, name="r", **changes):
    spec = load_preset(write_preset(tmp_path, stages=stages, training={**TRAIN, "log_every": 1, "device": "cpu"},
                                    **changes))
    path = create_run_dir(tmp_path / "runs", name)
    prepare_run_dir(path, spec)
    return spec, path


def epochs(path, stage):
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage and "mAP50_95" in r]


def test_sparse_s_auto_logs_the_pruned_at_target_map_and_outputs_its_best_epoch(tmp_path):
    stages = [{"type": "train"}, {"type": "sparse", "s": "auto", "training": {"epochs": 3}},
              {"type": "prune", "percent": 0.5}]
    spec, path = start(tmp_path, stages)
    Pipeline(spec, path).run()
    rows = epochs(path, "sparse")
    assert len(rows) == 3
    for r in rows:  # beside the unpruned mAP: the cut copy's, the s used and the monitor's cost
        assert 0.0 <= r["mAP50_95_pruned_at_target"] <= 1.0 and r["s"] > 0 and r["monitor_time"] > 0
        assert r["target_threshold"] > 0
    log = (path / "log.txt").read_text()
    assert "s: auto starts at s=" in log and "s: auto after epoch 2" in log
    assert "mAP50_95_pruned_at_target: pruned at percent 0.5 (from stage prune)" in log
    # the output is the epoch with the best pruned-at-target mAP, ties to the later one
    scores = [r["mAP50_95_pruned_at_target"] for r in rows]
    best = max(i for i, v in enumerate(scores) if v == max(scores))
    summary = json.loads((path / "summary.json").read_text())
    assert summary["sparse"]["selected_epoch"] == best + 1
    assert summary["sparse"]["s_setting"] == "auto"
    assert math.isclose(summary["sparse"]["mAP50_95_pruned_at_target"], scores[best])


def test_cut_detectors_are_measured_with_recalibrated_batchnorm(tmp_path):
    spec, path = start(tmp_path, [{"type": "train", "training": {"epochs": 0}}])
    run = Pipeline(spec, path)
    task = run.task
    model = task.fresh(spec.model).model
    randomise_bn(model)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    handle = bn.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    task.calibrate(model)
    handle.remove()
    assert sum(x.shape[0] for x in seen) == min(128, 32)  # the training split has 32 images
    # a cumulative average over the calibration batches of each batch's statistics
    mean = torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0)
    var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in seen]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-3, atol=1e-5)
    batches = task.calibration_batches()
    assert batches[0].dtype == torch.float32 and 0.0 <= float(batches[0].min()) and float(batches[0].max()) <= 1.0


def test_a_sparse_stage_whose_gammas_did_not_move_says_so():
    from types import SimpleNamespace

    from engine.detect.task import unmoved_warning
    from engine.slim.sparse import SparsePenalty

    penalty = SparsePenalty(s=0.01)
    penalty.names, penalty.weights = ["bn"], [nn.Parameter(torch.ones(8))]
    stage = SimpleNamespace(name="sparse", s=0.01)
    text = unmoved_warning(stage, {"acc_unpruned_subset": 0.85, "acc_pruned_at_target": 0.0}, penalty)
    assert "0.0000 against 0.8500" in text and "did not move the gammas" in text and "0.0%" in text
    assert "s: auto" in text and "0.01" in text
    assert unmoved_warning(stage, {"acc_unpruned_subset": 0.85, "acc_pruned_at_target": 0.83}, penalty) is None


def test_detect_lr_budget_follows_ultralytics_schedule():
    from engine.detect.monitor import DetectLrBudget

    flat = DetectLrBudget({"epochs": 3, "lr0": 0.01, "lrf": 1.0, "batch": 16, "warmup_epochs": 0}, batches=8)
    assert flat.per_epoch == pytest.approx([0.02, 0.02, 0.02])  # 8 batches, a step every 4 (64 images)
    cos = DetectLrBudget({"epochs": 4, "lr0": 0.01, "lrf": 0.01, "batch": 64, "cos_lr": True, "warmup_epochs": 0},
                         batches=5)
    assert cos.per_epoch[0] == pytest.approx(0.05) and cos.per_epoch[0] > cos.per_epoch[2] > cos.per_epoch[3]


KD_STAGES = [
    {"type": "train"},
    {"type": "prune", "percent": 0.5},
    {"type": "finetune", "teacher": "original", "kd": {"T": 2.0, "w_box": 0.5},
     "features": [{"type": "cwd", "student": "detect", "teacher": "detect"},
                  {"type": "cosine", "student": "model.9", "teacher": "model.9", "weight": 0.5}]},
    {"type": "finetune", "name": "finetune-plain", "start": "prune"},
]


def test_kd_finetune_logs_each_term_cancels_and_resumes_exactly(tmp_path):
    spec, path = start(tmp_path, KD_STAGES)
    # 4 batches per epoch: train takes 8 checks; stop in the KD finetune's second epoch
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(13)).run()
    last = torch.load(path / "weights" / "last.pt", weights_only=True)
    assert last["position"]["stage"] == "finetune"
    adapters = last["distill"]["adapters"]
    assert adapters, "the 1x1 adapters (pruned neck -> teacher width) are in the resume state"
    assert not any("adapter" in k or "criterion" in k for k in last["state_dict"]), "never in the model"
    Pipeline(load_preset(path / "spec.yaml"), path).run(resume=True)
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "done"
    kd = epochs(path, "finetune")
    assert [r["epoch"] for r in kd] == [0, 1]
    for r in kd:
        assert r["kd_loss"] > 0 and r["feat_loss"] > 0 and {"box_loss", "cls_loss", "dfl_loss"} <= set(r)
    assert all("kd_loss" not in r for r in epochs(path, "finetune-plain"))
    log = (path / "log.txt").read_text()
    assert "class-score KD x 1 (all anchors)" in log and "DFL box KD x 0.5" in log
    assert "feature cwd detect -> detect x 1 (3 map(s), 3 through a 1x1 adapter)" in log
    summary = json.loads((path / "summary.json").read_text())
    assert {"finetune", "finetune-plain"} <= set(summary["comparison"])
    saved = checkpoint.load(path / "weights" / "finetune.pt")  # the student alone, as any detector
    assert not hasattr(saved.model, "criterion") or saved.model.criterion is None


def test_the_kd_loss_is_zero_for_a_student_equal_to_its_teacher():
    from engine.detect.distill import box_kd, class_kd, cwd

    torch.manual_seed(0)
    scores, boxes = torch.randn(2, 3, 50), torch.randn(2, 64, 50)
    assert float(class_kd(scores, scores, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(box_kd(boxes, boxes, torch.rand(2, 50), 16, 2.0)) == pytest.approx(0.0, abs=1e-6)
    feat = torch.randn(2, 8, 4, 4)
    assert float(cwd(feat, feat)) == pytest.approx(0.0, abs=1e-6)
    assert float(class_kd(scores + 1.0, scores, 2.0)) > 0 and float(cwd(feat * 2, feat)) > 0


def other_run_checkpoint(tmp_path, **data):
    """A finished tiny detection run's train.pt, with other classes or image size."""
    base = {"dataset": "yolo_shapes", "num_classes": 3, "train_size": 16, "val_size": 16, "image_size": 64} | data
    spec = load_preset(write_preset(tmp_path / "other", name="other", data=base,
                                    stages=[{"type": "train", "training": {"epochs": 0}}]))
    path = create_run_dir(tmp_path / "other" / "runs", "o")
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    return path / "weights" / "train.pt"


@pytest.mark.parametrize("data, match", [({"num_classes": 2}, "detects 2 classes but the run's data has 3"),
                                         ({"image_size": 96}, "built for 96 px images but the run trains at 64 px")])
def test_a_teacher_with_other_classes_or_size_is_named(tmp_path, data, match):
    (tmp_path / "other").mkdir()
    teacher = other_run_checkpoint(tmp_path, **data)
    spec, path = start(tmp_path, [{"type": "finetune", "teacher": str(teacher), "training": {"epochs": 1}}])
    with pytest.raises(DistillError, match=match):
        Pipeline(spec, path).run()


def test_a_classification_teacher_and_a_missing_tap_are_named(tmp_path):
    from engine.models import build

    teacher = tmp_path / "cls.pt"
    model = build("c3net", num_classes=3)
    checkpoint.save(teacher, model, checkpoint.arch_dict("c3net", 3, 3, {}))
    spec, path = start(tmp_path, [{"type": "finetune", "teacher": str(teacher), "training": {"epochs": 1}}])
    with pytest.raises(DistillError, match="is a classification model"):
        Pipeline(spec, path).run()
    stages = [{"type": "train", "training": {"epochs": 0}},
              {"type": "finetune", "teacher": "train", "features": [{"type": "cwd", "student": "neck", "teacher": "detect"}]}]
    spec, path = start(tmp_path, stages, name="r2")
    with pytest.raises(DistillError, match=r"feature tap 'neck' is not a module of the student; available: detect"):
        Pipeline(spec, path).run()


def test_a_pickled_teacher_needs_trust(tmp_path):
    from engine.errors import CheckpointError

    spec, path = start(tmp_path, [{"type": "train", "training": {"epochs": 0}}])
    run = Pipeline(spec, path)
    model = run.task.fresh(spec.model).model
    teacher = tmp_path / "best.pt"
    torch.save({"model": copy.deepcopy(model)}, teacher)  # as Ultralytics saves: a pickled module
    spec, path = start(tmp_path, [{"type": "finetune", "teacher": str(teacher), "training": {"epochs": 1}}], name="r3")
    with pytest.raises(CheckpointError, match="trust"):
        Pipeline(spec, path).run()


def test_classification_refuses_the_detection_kd_terms(tmp_path):
    from engine.task import CLASSIFY, ULTRALYTICS

    spec = load_preset(write_preset(tmp_path, stages=[
        {"type": "prune", "percent": 0.5}, {"type": "finetune", "teacher": "original", "kd": {"w_box": 1.0},
         "features": [{"type": "cwd", "student": "detect", "teacher": "detect"}]}]))
    stage = spec.stages[1]
    assert ULTRALYTICS.refusal(stage) is None
    assert "kd.w_box" in CLASSIFY.refusal(stage) and "classification models" in CLASSIFY.refusal(stage)
    no_box = stage.model_copy(update={"kd": stage.kd.model_copy(update={"w_box": None})})
    assert "features[0].type cwd" in CLASSIFY.refusal(no_box)
    classify = write_preset(tmp_path, name="c", task="classify", model={"arch": "c3net"},
                            data={"dataset": "shapes", "num_classes": 3, "train_size": 64, "val_size": 16},
                            stages=[{"type": "prune", "percent": 0.5}, {"type": "finetune", "teacher": "original",
                                     "features": [{"type": "cwd", "student": "features", "teacher": "features"}]}])
    with pytest.raises(PresetError, match=r"features\[0\]\.type cwd .* not available for classification models"):
        load_preset(classify)

