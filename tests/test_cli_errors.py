"""Advice that can be followed, and no raw tracebacks: the CLI on bad input and broken disks."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import checkpoint, runs
from engine.cli import ExitCode, main
from engine.runs import read_run

KD_STUDENT = {"arch": "kd_student", "kwargs": {"bn": True}}


def run_dir(tmp_path: Path) -> Path:
    return next((tmp_path / "runs").iterdir())


def resume_args(stderr: str) -> list[str]:
    """The `resume with: slimlab ...` command the CLI printed, as arguments for main()."""
    line = next(ln for ln in stderr.splitlines() if "resume with: " in ln)
    command = line.split("resume with: ", 1)[1].rstrip(")")
    words = shlex.split(command)
    assert words[0] == "slimlab"
    return words[1:]


def test_a_nan_loss_says_what_was_saved_and_its_resume_command_works(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(model=KD_STUDENT, training={"epochs": 1, "batch_size": 32, "lr": 10.0, "log_every": 2,
                                                      "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "loss is nan" in err and "no resume point of this stage was saved yet" in err
    assert "last.pt holds" not in err  # there is none: the message must not claim one
    args = resume_args(err)
    assert "--set" in args and "training.lr=1" in args  # the advice, as a command
    assert main(args) == ExitCode.OK, capsys.readouterr().err
    run = run_dir(tmp_path)
    assert "training:\n  epochs: 1\n  batch_size: 32\n  optimizer: sgd\n  lr: 1.0" in (run / "spec.yaml").read_text()
    assert "resume with --set training.lr=1 (was 10.0)" in (run / "log.txt").read_text()
    assert read_run(run).state == "done"


def test_resume_set_refuses_what_the_saved_state_depends_on(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(model=KD_STUDENT, stages=[{"type": "train"}, {"type": "prune", "percent": 0.3}],
                         training={"epochs": 1, "batch_size": 32, "lr": 0.05, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.OK
    run = run_dir(tmp_path)  # made to look stopped before its prune stage
    (run / "weights" / "prune.pt").unlink()
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({"train": summary["train"]}))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "cancelled", "completed": ["train"],
                                                 "outputs": {"train": status["outputs"]["train"]}}))
    capsys.readouterr()
    for item, why in (("training.batch_size=8", "saved state depends on it"),
                      ("model.kwargs.bn=false", "completed stages"),
                      ("stages.0.training.lr=0.5", "stage train is done"),
                      ("stages.1.type=sweep", "cannot change on a resume"),
                      ("rounds=2", "cannot change on a resume")):
        assert main(["--batch", "--resume", str(run), "--set", item]) == ExitCode.USAGE, item
        assert why in capsys.readouterr().err, item
    assert main(["--batch", "--resume", str(run), "--set", "stages.1.percent=0.2"]) == ExitCode.OK
    assert json.loads((run / "summary.json").read_text())["prune"]["percent"] == 0.2


def test_batch_trust_loads_a_pickled_starting_model(tmp_path, tiny_preset, capsys):
    model = checkpoint.build_model(checkpoint.arch_dict("kd_student", 4, 3, {"bn": True}))
    pickled = tmp_path / "whole.pt"
    torch.save(model, pickled)  # a whole pickled nn.Module: only with --trust
    preset = tiny_preset(model={**KD_STUDENT, "checkpoint": str(pickled)}, training={"epochs": 0, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.FAILED
    assert "--trust" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs"), "--trust"]) == ExitCode.OK


def test_bad_preset_paths(tmp_path, capsys):
    assert main(["--batch", str(tmp_path)]) == ExitCode.USAGE
    assert "is a directory, not a preset file" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["--batch", str(empty)]) == ExitCode.USAGE
    assert "the preset is empty" in capsys.readouterr().err


def test_resume_with_a_missing_or_corrupt_status_reads_the_stage_outputs(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(model=KD_STUDENT, stages=[{"type": "train"}, {"type": "evaluate"}],
                         training={"epochs": 1, "batch_size": 32, "lr": 0.05, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.OK
    run = run_dir(tmp_path)
    trained = (run / "weights" / "train.pt").read_bytes()
    for damage, note in ((lambda p: p.unlink(), "status.json is missing"),
                         (lambda p: p.write_text('{"state": "runn'), "status.json is unreadable")):
        damage(run / "status.json")
        assert read_run(run).state == "unreadable"
        assert main(["--batch", "--resume", str(run)]) == ExitCode.OK, capsys.readouterr().err
        log = (run / "log.txt").read_text()
        assert note in log and "resume: stage train had finished" in log
        assert (run / "weights" / "train.pt").read_bytes() == trained  # not trained again
        status = read_run(run)
        assert status.state == "done" and status.extra["completed"] == ["train", "evaluate"]


def test_resuming_a_finished_run_changes_nothing(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(model=KD_STUDENT, training={"epochs": 0, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.OK
    run = run_dir(tmp_path)
    before = json.loads((run / "status.json").read_text())
    capsys.readouterr()
    assert main(["--batch", "--resume", str(run)]) == ExitCode.OK
    assert "nothing to resume" in capsys.readouterr().out
    after = json.loads((run / "status.json").read_text())
    assert after["ended"] == before["ended"] and after["state"] == "done"


def test_run_files_follow_the_umask(tmp_path, tiny_preset):
    mask = os.umask(0o022)
    os.umask(mask)
    preset = tiny_preset(model=KD_STUDENT, training={"epochs": 1, "batch_size": 32, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.OK
    run = run_dir(tmp_path)
    for name in ("status.json", "summary.json", "spec.yaml", "weights/best.pt", "weights/train.pt", "run.lock"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_status_is_written_in_place_when_the_disk_is_full(tmp_path, monkeypatch):
    writer = runs.RunWriter(tmp_path)
    writer.status(state="running")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "atomic_file", full)
    with pytest.raises(OSError):  # a progress update is not worth an in-place write
        writer.status(progress=0.5)
    writer.status(state="failed", error="no space left on /data")  # the final state is
    info = read_run(tmp_path)
    assert info.state == "failed" and info.error == "no space left on /data"


# ---------------------------------------------------------------- a real full or read-only disk

UNSHARE = shutil.which("unshare")


def in_private_mount(mount: Path, options: str, command: str) -> subprocess.CompletedProcess:
    """`command` with a tmpfs of `options` mounted at `mount`, in a private mount namespace."""
    mount.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(mount))} && {command}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([UNSHARE, "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=240)


def namespaces_usable(tmp_path: Path) -> bool:
    if UNSHARE is None:
        return False
    probe = in_private_mount(tmp_path / "probe", "size=64k", "true")
    return probe.returncode == 0


def test_disk_full_and_read_only_runs_folders_are_said_plainly(tmp_path, tiny_preset):
    if not namespaces_usable(tmp_path):
        pytest.skip("unshare -rm (a private mount namespace) is not available here")
    preset = tiny_preset(model=KD_STUDENT, training={"epochs": 1, "batch_size": 32, "device": "cpu"})
    slimlab = f"{shlex.quote(sys.executable)} -m engine --batch {shlex.quote(str(preset))} --runs-dir"
    disk = tmp_path / "disk"

    full = in_private_mount(disk, "size=400k", f"{slimlab} {disk}/runs; echo EXIT=$?; cat {disk}/runs/tiny/status.json")
    assert "EXIT=1" in full.stdout, full.stderr
    assert "error: no space left on " in full.stderr and "unexpected pos" not in full.stderr
    assert "Traceback" not in full.stderr
    status = json.loads(full.stdout[full.stdout.index("{"):])
    assert status["state"] == "failed" and "no space left on" in status["error"]

    ro = in_private_mount(disk, "ro,size=64k", f"{slimlab} {disk}/runs; echo EXIT=$?")
    assert "EXIT=2" in ro.stdout and "read-only file system" in ro.stderr and "Traceback" not in ro.stderr


def test_resume_set_lr_reaches_a_stage_continued_from_last_pt(tmp_path, tiny_preset, capsys):
    from engine.cli import prepare_run_dir
    from engine.config import load_preset
    from engine.errors import Cancelled
    from engine.pipeline import Pipeline

    from helpers import StopAfter

    spec = load_preset(tiny_preset(model=KD_STUDENT, training={
        "epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 1, "device": "cpu", "schedule": "constant",
        "warmup_epochs": 0, "momentum": 0.9}))
    run = runs.create_run_dir(tmp_path / "runs", "tiny")
    prepare_run_dir(run, spec)
    with pytest.raises(Cancelled):
        Pipeline(spec, run, stop=StopAfter(3)).run()
    stopped = checkpoint.read_raw(run / "weights" / "last.pt")["position"]["step"]
    assert main(["--batch", "--resume", str(run), "--set", "training.lr=0.01", "--set", "training.momentum=0"]) == 0
    log = (run / "log.txt").read_text()
    assert "stage train continues from weights/last.pt" in log and "training.lr=0.01 (was 0.05)" in log
    lrs = [(r["step"], r["lr"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if "step" in r and "accuracy" not in r]
    assert [lr for step, lr in lrs if step <= stopped] == [0.05] * stopped
    assert {lr for step, lr in lrs if step > stopped} == {0.01}  # the saved optimizer state's lr is not kept
    assert checkpoint.load(run / "weights" / "best.pt").meta["spec"]["training"]["lr"] == 0.01
