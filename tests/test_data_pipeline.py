"""A run on a streamed image folder: the log says how the data was built, and a run cut
inside an epoch resumes to the same figures as an uninterrupted one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.errors import Cancelled
from engine.pipeline import Pipeline
from engine.progress import PlainReporter
from engine.runs import create_run_dir

from helpers import StopAfter, make_images


def run(tmp_path: Path, preset: Path, name: str, stop=None, resume: bool = False, out=None) -> Path:
    spec = load_preset(preset)
    path = tmp_path / "runs" / name
    if not resume:
        path = create_run_dir(tmp_path / "runs", name)
        prepare_run_dir(path, spec)
    Pipeline(spec, path, stop=stop, reporter=PlainReporter(out or io.StringIO())).run(resume=resume)
    return path


def epochs(path: Path) -> list[dict]:
    return [r for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines()) if "accuracy" in r]


def test_streamed_run_resumes_inside_an_epoch_to_the_same_result(tmp_path, tiny_preset):
    make_images(tmp_path / "imgs", classes=3, per_class=16)
    preset = tiny_preset(
        data={"dataset": "imagefolder", "path": str(tmp_path / "imgs"), "image_size": 32, "cache": "none",
              "workers": 1, "val_fraction": 0.25, "test_fraction": 0.25,
              "augment": ["random_crop", "horizontal_flip"]},
        training={"epochs": 2, "batch_size": 8, "lr": 0.05, "log_every": 1, "device": "cpu"},
    )
    out = io.StringIO()
    full = run(tmp_path, preset, "full", out=out)
    note = "data: imagefolder: streaming 48 images"
    for text in ((full / "log.txt").read_text(), out.getvalue()):  # the log and the headless output
        assert note in text and "with 1 worker process" in text

    with pytest.raises(Cancelled):
        run(tmp_path, preset, "cut", stop=StopAfter(4))  # 3 steps per epoch: stops inside epoch 2
    last = checkpoint.read_raw(tmp_path / "runs" / "cut" / "weights" / "last.pt")
    assert last["position"]["epoch"] == 1 and last["position"]["batch"] == 2
    cut = run(tmp_path, preset, "cut", resume=True)

    a, b = epochs(full), epochs(cut)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "val_loss", "accuracy", "step"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), key
    wa = checkpoint.read_raw(full / "weights" / "train.pt")["state_dict"]
    wb = checkpoint.read_raw(cut / "weights" / "train.pt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
