"""The trainer through the pipeline: resume equivalence, NaN guard, cancellation, bf16, memory lines."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from engine import checkpoint, trust
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.errors import Cancelled, RunError
from engine.pipeline import Pipeline
from engine.runs import create_run_dir, read_run

from helpers import StopAfter


def new_run(tmp_path: Path, preset: Path, name: str, overrides: list[str] = ()) -> tuple[Path, object]:
    spec = load_preset(preset, overrides)
    path = create_run_dir(tmp_path / "runs", name)
    prepare_run_dir(path, spec)
    return path, spec


def epoch_lines(path: Path) -> list[dict]:
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "accuracy" in r]


def test_resume_after_cancel_matches_uninterrupted_run(tmp_path, tiny_preset):
    preset = tiny_preset()
    full, spec = new_run(tmp_path, preset, "full")
    Pipeline(spec, full).run()

    cut, spec = new_run(tmp_path, preset, "cut")
    with pytest.raises(Cancelled):
        Pipeline(spec, cut, stop=StopAfter(11)).run()  # 8 steps per epoch: stops inside epoch 2
    assert read_run(cut).state == "cancelled"
    last = checkpoint.read_raw(cut / "weights" / "last.pt")
    assert last["position"]["epoch"] == 1 and last["position"]["batch"] > 0
    Pipeline(spec, cut).run(resume=True)
    assert read_run(cut).state == "done"

    a, b = epoch_lines(full), epoch_lines(cut)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "val_loss", "accuracy", "lr", "step"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), key
    wa = checkpoint.read_raw(full / "weights" / "train.pt")["state_dict"]
    wb = checkpoint.read_raw(cut / "weights" / "train.pt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


NAN_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class GoesNaN(nn.Module):
        '''A small BN net whose output turns NaN after `after` training forwards.'''

        def __init__(self, num_classes, in_channels=3, after=10):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, num_classes)
            self.after, self.calls = after, 0

        def forward(self, x):
            y = self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
            if self.training:
                self.calls += 1
                if self.calls > self.after:
                    y = y * float("nan")
            return y
    """
)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_state(tmp_path, tiny_preset, monkeypatch):
    (tmp_path / "nanmodel.py").write_text(NAN_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = tiny_preset(model={"arch": "nanmodel:GoesNaN", "kwargs": {"after": 10}})
    path, spec = new_run(tmp_path, preset, "nan")
    named = trust.from_spec(spec)  # the preset names its model class: the user's own
    with pytest.raises(RunError) as e:
        Pipeline(spec, path, trust=named).run()
    assert "loss is nan" in str(e.value) and "epoch 1" in str(e.value) and "last.pt" in str(e.value)
    info = read_run(path)
    assert info.state == "failed" and "loss is nan" in info.error
    last = checkpoint.load(path / "weights" / "last.pt", trust=named)
    assert all(torch.isfinite(v).all() for v in last.model.state_dict().values())
    assert last.raw["position"]["epoch"] == 1


def test_bf16_autocast_on_cpu_trains(tmp_path, tiny_preset):
    path, spec = new_run(tmp_path, tiny_preset(), "bf16", ["training.amp=bf16", "training.accumulate=2"])
    Pipeline(spec, path).run()
    lines = epoch_lines(path)
    assert len(lines) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in lines)
    steps = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if '"rss"' in x]
    assert steps and all(r["rss"] > 0 for r in steps)
    assert lines[-1]["step"] == 8  # 16 micro-batches, accumulate 2: one optimizer step per effective batch


def test_fp16_on_cpu_is_refused_with_a_hint(tmp_path, tiny_preset):
    from engine.errors import PresetError

    path, spec = new_run(tmp_path, tiny_preset(), "fp16", ["training.amp=fp16"])
    with pytest.raises(PresetError, match="bf16"):
        Pipeline(spec, path).run()


def test_run_directory_layout(tmp_path, tiny_preset):
    path, spec = new_run(tmp_path, tiny_preset(), "layout")
    Pipeline(spec, path).run()
    for name in ("spec.yaml", "status.json", "metrics.jsonl", "log.txt", "summary.json", "weights/best.pt", "weights/train.pt"):
        assert (path / name).exists(), name
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "done" and status["completed"] == ["train"] and status["heartbeat"] > 0
    summary = json.loads((path / "summary.json").read_text())["train"]
    for key in ("accuracy", "params", "flops", "latency_b1_ms", "latency_b32_ms", "size"):
        assert key in summary, key
    # two runs with one name never share a directory
    assert create_run_dir(tmp_path / "runs", "layout").name == "layout-2"
