"""A finished stage is never redone: a kill after any write of a stage's end, then --resume.

The kill is simulated in-process: os.replace and os.unlink (every file write of a run ends in
one of them) are counted, and after the Nth the process is "dead": that call and every later
write raise, so nothing more reaches the disk (not even the failure status or the cleanup of
temporary files), as after a SIGKILL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import checkpoint, runs
from engine.classify.task import ClassifyTask
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.errors import Cancelled
from engine.pipeline import Pipeline
from engine.runs import create_run_dir, read_run
from engine.train import Trainer

from helpers import StopAfter

STAGES = [{"type": "train"}, {"type": "prune", "percent": 0.3}, {"type": "evaluate"}]
SMALL = {"dataset": "shapes", "num_classes": 4, "train_size": 64, "val_size": 32, "augment": False}


class Killed(BaseException):
    """The process died here (a BaseException: no `except Exception` handles it)."""


class Writes:
    """Counts file writes; after `kill_after` of them every write raises Killed."""

    def __init__(self, kill_after: int | None = None):
        self.kill_after, self.count, self.dead, self.names = kill_after, 0, False, []
        self._replace, self._unlink = os.replace, os.unlink

    def replace(self, src, dst, **kw):
        self._do(self._replace, (src, dst), kw, Path(dst).name)

    def unlink(self, path, **kw):
        self._do(self._unlink, (path,), kw, "rm " + Path(path).name)

    def _do(self, fn, args, kw, name):
        if self.dead:
            raise Killed
        fn(*args, **kw)
        self.count += 1
        self.names.append(name)
        if self.count == self.kill_after:
            self.dead = True
            raise Killed(f"after write {self.count}: {name}")


@pytest.fixture
def spec(tiny_preset, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_S", 3600.0)  # no status writes from a timer: write order is fixed
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what is tested here; speed is welcome
    preset = tiny_preset(data=SMALL, stages=STAGES, model={"arch": "kd_student", "kwargs": {"bn": True}},
                         training={"epochs": 1, "batch_size": 32, "lr": 0.05, "log_every": 1, "device": "cpu"})
    return load_preset(preset)


def new_run(root: Path, spec, name: str) -> Path:
    path = create_run_dir(root, name)
    prepare_run_dir(path, spec)
    return path


def run_with(monkeypatch, writes: Writes, spec, path: Path, resume: bool = False) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "replace", writes.replace)
        m.setattr(os, "unlink", writes.unlink)
        Pipeline(spec, path).run(resume=resume)


def test_a_kill_after_any_write_of_a_stage_end_never_loses_the_stage(tmp_path, spec, monkeypatch):
    reference = Writes()
    run_with(monkeypatch, reference, spec, new_run(tmp_path, spec, "reference"))
    # the stage ends: every write after the training stage's last resume point
    first = max(i for i, n in enumerate(reference.names) if n == "last.pt") + 1
    points = range(first, reference.count + 1)  # from the write of the final resume point on
    assert len(points) >= 10, reference.names

    fits: list[tuple[str, bool]] = []
    real_fit = Trainer.fit

    def counting_fit(self, resume=None):
        fits.append((self.stage, resume is not None))
        return real_fit(self, resume=resume)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    decisions = set()
    for n in points:
        path = new_run(tmp_path, spec, f"kill{n}")
        with pytest.raises(Killed):
            run_with(monkeypatch, Writes(kill_after=n), spec, path)
        fits.clear()
        Pipeline(spec, path).run(resume=True)
        what = f"killed after write {n} ({reference.names[n - 1]})"
        assert ("train", False) not in fits, f"{what}: the trained stage was trained again from scratch"
        status = json.loads((path / "status.json").read_text())
        assert status["state"] == "done" and status["completed"] == ["train", "prune", "evaluate"], what
        summary = json.loads((path / "summary.json").read_text())
        assert all(summary[s]["accuracy"] is not None for s in ("train", "prune", "evaluate")), what
        assert summary["prune"]["size"] == (path / "weights" / "prune.pt").stat().st_size, what
        assert (path / "weights" / "best.pt").read_bytes() == (path / "weights" / "prune.pt").read_bytes(), what
        assert not (path / "weights" / "last.pt").exists(), what
        assert not runs_partial(path), what
        epochs = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if '"accuracy"' in x]
        assert [(r["stage"], r["epoch"]) for r in epochs] == [("train", 0)], what  # each epoch once
        log = (path / "log.txt").read_text()
        assert "resume: " in log, what  # what resume decided is said
        assert checkpoint.load(path / "weights" / "best.pt").plan is not None, what
        decisions |= {d for d in ("figures are measured again", "summary.json holds its figures",
                                  "continues from weights/last.pt", "is done; skipped") if d in log}
    assert len(decisions) == 4, decisions  # every kind of decision was met on the way

def runs_partial(path: Path) -> list[Path]:
    return [*path.glob(".*.tmp"), *(path / "weights").glob(".*.tmp")]


def test_partial_files_and_a_deleted_last_pt_are_said_in_the_log(tmp_path, spec, monkeypatch):
    path = new_run(tmp_path, spec, "cut")
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(1)).run()
    assert (path / "weights" / "last.pt").exists()
    (path / "weights" / "last.pt").unlink()
    (path / "weights" / ".train.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    Pipeline(spec, path).run(resume=True)
    log = (path / "log.txt").read_text()
    assert "removed 1 partial file left by an interrupted write: weights/.train.pt.abc123.tmp" in log
    assert "stage train was in progress but weights/last.pt is missing" in log
    assert "stage train: removed weights/last.pt, its resume point" in log  # its removal at the stage end too
    assert not runs_partial(path)
    assert read_run(path).state == "done"


def test_resume_drops_the_metrics_lines_it_redoes(tmp_path, spec, monkeypatch):
    spec.training.epochs = 2
    path = new_run(tmp_path, spec, "dupes")
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(3)).run()  # stops inside epoch 2, after step 3
    last = checkpoint.read_raw(path / "weights" / "last.pt")["position"]
    # a process killed later had written lines past the resume point: the resume redoes them
    with open(path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"stage": "train", "epoch": 1, "step": last["step"] + 1, "loss": 9.0}) + "\n")
    tail = runs.MetricsTail(path / "metrics.jsonl")
    assert tail.read()
    Pipeline(spec, path).run(resume=True)
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r.get("stage") == "train" and "accuracy" not in r]
    assert steps == sorted(set(steps)) == list(range(1, 5))  # each step once, in order
    assert "dropped 1 metrics line of stage train" in (path / "log.txt").read_text()
    again = tail.read()  # a reader that was following the file starts over
    assert tail.rewritten and [r["step"] for r in again if r.get("stage") == "train" and "accuracy" not in r] == steps


def test_a_resumed_stage_keeps_the_progress_it_had_reached(tmp_path, spec, monkeypatch):
    spec.training.epochs = 2
    path = new_run(tmp_path, spec, "progress")
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(2)).run()  # inside epoch 2
    reached = read_run(path).progress
    assert 0.5 <= reached < 1.0
    seen: list[float] = []
    train = ClassifyTask.train_stage

    def spy(self, stage, resume):  # the stage has started again; its first step is still to come
        seen.append(read_run(path).progress)
        return train(self, stage, resume)

    monkeypatch.setattr(ClassifyTask, "train_stage", spy)
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(0)).run(resume=True)
    assert seen == [reached]  # not 0% until the first step
    (path / "weights" / "last.pt").unlink()  # no resume point: the stage starts over, from 0%
    Pipeline(spec, path).run(resume=True)
    assert seen == [reached, 0.0] and read_run(path).state == "done"
