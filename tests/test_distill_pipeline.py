"""Distillation stages in a run: teacher from an earlier stage, feature terms, resume, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from engine import checkpoint
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.errors import Cancelled, DistillError
from engine.pipeline import Pipeline
from engine.runs import create_run_dir

from helpers import StopAfter

STAGES = [
    {"name": "teacher", "type": "train"},
    {"name": "student", "type": "distill", "model": {"arch": "kd_student"}, "teacher": "teacher",
     "kd": {"T": 2.0, "w_kd": 0.25, "w_ce": 0.75},
     "features": [{"type": "hint", "student": "features", "teacher": "features.24", "weight": 0.5, "regressor": "3x3"}]},
]


def make(tmp_path, preset, name):
    spec = load_preset(preset)
    path = create_run_dir(tmp_path / "runs", name)
    prepare_run_dir(path, spec)
    return spec, path


def test_distill_stage_logs_terms_and_saves_a_clean_student(tmp_path, tiny_preset):
    spec, path = make(tmp_path, tiny_preset(stages=STAGES), "kd")
    Pipeline(spec, path).run()
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    student_steps = [r for r in lines if r["stage"] == "student" and "accuracy" not in r]
    assert student_steps and all({"ce", "kd"} <= set(r) for r in student_steps)
    assert any(k.startswith("hint:") for k in student_steps[0])
    saved = torch.load(path / "weights" / "student.pt", weights_only=True)
    fresh = checkpoint.build_model(saved["arch"])
    assert set(saved["state_dict"]) == set(fresh.state_dict())  # no regressor in the student
    summary = json.loads((path / "summary.json").read_text())
    assert set(summary["comparison"]) == {"teacher", "student"}


def test_cancelled_distill_resumes_with_its_regressor(tmp_path, tiny_preset):
    spec, path = make(tmp_path, tiny_preset(stages=STAGES), "kd-resume")
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(16 + 3)).run()  # 16 teacher steps, then 3 student steps
    last = torch.load(path / "weights" / "last.pt", weights_only=True)
    assert last["position"]["stage"] == "student" and last["callbacks"][0]  # the regressor's weights
    Pipeline(spec, path).run(resume=True)
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "done" and status["completed"] == ["teacher", "student"]


def test_bad_tap_is_reported_before_training(tmp_path, tiny_preset):
    stages = [STAGES[0], {**STAGES[1], "features": [{"type": "hint", "student": "featurs", "teacher": "features"}]}]
    spec, path = make(tmp_path, tiny_preset(stages=stages), "badtap")
    with pytest.raises(DistillError) as e:
        Pipeline(spec, path).run()
    assert "featurs" in str(e.value) and "features" in str(e.value)
    lines = (path / "metrics.jsonl").read_text().splitlines()
    assert not any('"stage": "student"' in x for x in lines)


def test_missing_teacher_checkpoint(tmp_path, tiny_preset):
    from engine.errors import PresetError

    stages = [{"type": "distill", "teacher": str(tmp_path / "nope.pt")}]
    with pytest.raises(PresetError, match="nope.pt does not exist"):
        load_preset(tiny_preset(stages=stages))


def test_teacher_with_other_class_count(tmp_path, tiny_preset):
    arch = checkpoint.arch_dict("vgg", 7, 3, {"depth": 11, "width": 0.125})
    teacher = tmp_path / "t7.pt"
    checkpoint.save(teacher, checkpoint.build_model(arch), arch)
    stages = [{"type": "distill", "teacher": str(teacher)}]
    spec, path = make(tmp_path, tiny_preset(stages=stages), "classes")
    with pytest.raises(DistillError, match="class"):
        Pipeline(spec, path).run()


def test_teacher_from_another_runs_directory(tmp_path, tiny_preset):
    spec, first = make(tmp_path, tiny_preset(stages=[{"type": "train", "training": {"epochs": 1}}]), "teacher-run")
    Pipeline(spec, first).run()
    stages = [{"type": "distill", "model": {"arch": "kd_student"}, "teacher": str(first), "training": {"epochs": 1}}]
    spec, path = make(tmp_path, tiny_preset(stages=stages), "from-run")
    Pipeline(spec, path).run()
    assert "stage distill done" in (path / "log.txt").read_text()
