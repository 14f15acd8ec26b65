"""training.threads: torch's intra-op threads, applied for the run and recorded."""

from __future__ import annotations

import io
import json

import pytest
import torch

from engine import threads
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.pipeline import Pipeline
from engine.progress import PlainReporter
from engine.runs import create_run_dir


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_applied_and_recorded(tmp_path, tiny_preset, monkeypatch):
    """A request above the cores is lowered to them, and the warning reaches the headless output."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    torch.set_num_threads(2)
    spec = load_preset(tiny_preset(), ["training.threads=3", "training.epochs=1"])
    path = create_run_dir(tmp_path / "runs", "threads")
    prepare_run_dir(path, spec)
    out = io.StringIO()
    Pipeline(spec, path, reporter=PlainReporter(out)).run()
    assert torch.get_num_threads() == 1
    epochs = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if '"accuracy"' in x]
    assert epochs and all(r["threads"] == 1 for r in epochs)
    assert json.loads((path / "status.json").read_text())["threads"] == 1
    warning = "warning: training.threads=3 is more than the 1 CPU core here; using 1"
    log = (path / "log.txt").read_text()
    assert warning in out.getvalue() and warning in log
    assert "threads: 1 torch intra-op thread\n" in log


def test_threads_beyond_the_cores_are_clamped_with_a_note(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    used, note = threads.apply(16)
    assert used == 2 == torch.get_num_threads()
    assert note == "training.threads=16 is more than the 2 CPU cores here; using 2"
    torch.set_num_threads(1)
    assert threads.apply(None) == (1, None)  # None leaves torch's choice alone


def test_threads_must_be_positive():
    from engine.config import spec_from_dict
    from engine.errors import PresetError

    with pytest.raises(PresetError, match="training.threads: must be 1 or more"):
        spec_from_dict({"training": {"threads": 0}})
