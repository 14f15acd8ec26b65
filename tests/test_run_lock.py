"""One writer per run directory: an OS lock held for the whole run, released by the kernel."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import runs
from engine.cli import ExitCode, main, prepare_run_dir
from engine.config import load_preset
from engine.errors import RunBusy
from engine.pipeline import Pipeline
from tui import launcher


def held_by_another_process(run: Path, pid: int) -> int:
    """What another process holding the lock looks like from here: a flock on its own open file."""
    fd = os.open(run / runs.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path, tiny_preset):
    spec = load_preset(tiny_preset(training={"epochs": 0, "device": "cpu"}))
    run = runs.create_run_dir(tmp_path, "busy")
    prepare_run_dir(run, spec)
    runs.RunWriter(run).status(state="running", pid=4242)
    before = (run / "status.json").read_text()
    fd = held_by_another_process(run, 4242)
    try:
        assert runs.lock_holder(run) == 4242
        with pytest.raises(RunBusy, match="pid 4242") as e:
            Pipeline(spec, run).run(resume=True)
        assert e.value.pid == 4242
        assert (run / "status.json").read_text() == before  # the refused writer wrote nothing
        assert not (run / "log.txt").exists()
        assert runs.read_run(run).state == "running"  # a held lock means a live writer
        with pytest.raises(launcher.LaunchError, match="pid 4242"):  # the workbench's resume key
            launcher.resume(run)
    finally:
        os.close(fd)
    assert runs.lock_holder(run) is None
    assert runs.read_run(run).state == "failed"  # lock free, status "running": the writer died
    Pipeline(spec, run).run(resume=True)
    assert runs.read_run(run).state == "done" and runs.lock_holder(run) is None


def test_the_lock_of_a_killed_process_is_released_by_the_kernel(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(training={"epochs": 50, "batch_size": 32, "lr": 0.05, "log_every": 1, "device": "cpu"})
    run = tmp_path / "runs" / "tiny"
    cmd = [sys.executable, "-m", "engine", "--batch"]
    first = subprocess.Popen([*cmd, str(preset), "--runs-dir", str(tmp_path / "runs")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2)
        assert main(["--batch", "--resume", str(run)]) == ExitCode.USAGE  # a second writer, in this process
        assert f"pid {first.pid}" in capsys.readouterr().err
        assert json.loads((run / "status.json").read_text())["pid"] == first.pid  # not flipped
    finally:
        first.kill()  # SIGKILL: no handler runs, only the kernel cleans up
        first.wait()
    assert runs.lock_holder(run) is None and runs.read_run(run).state == "failed"
    third = subprocess.Popen([*cmd, "--resume", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: runs.lock_holder(run) == third.pid)
    third.send_signal(signal.SIGTERM)
    out, err = third.communicate(timeout=120)
    assert third.returncode == ExitCode.INTERRUPTED, err


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")
