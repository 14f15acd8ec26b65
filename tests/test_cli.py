"""The headless CLI: typed exit codes, plain output when piped, cancellation by signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import ExitCode, main
from engine.runs import read_run


def slimlab(*args: str, cwd: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_batch_ok_writes_a_run_and_prints_plain_lines(tmp_path, tiny_preset):
    out = slimlab("--batch", str(tiny_preset()), "--runs-dir", str(tmp_path / "runs"), "--name", "ok")
    assert out.returncode == ExitCode.OK, out.stderr
    assert "[train] epoch 2" in out.stdout and "\x1b[" not in out.stdout  # piped: no terminal codes
    assert read_run(tmp_path / "runs" / "ok").state == "done"


def test_bad_preset_exits_2_with_the_key(tmp_path, tiny_preset, capsys):
    code = main(["--batch", str(tiny_preset(training__lrr=1)), "--runs-dir", str(tmp_path)])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "training.lrr" in err and "did you mean 'lr'" in err
    assert not (tmp_path / "tiny").exists()  # nothing created for a preset that does not validate


def test_bad_override_and_missing_preset_exit_2(tmp_path, tiny_preset, capsys):
    assert main(["--batch", str(tiny_preset()), "--set", "training.epochs=-3"]) == ExitCode.USAGE
    assert main(["--batch", str(tmp_path / "none.yaml")]) == ExitCode.USAGE
    assert main(["--batch"]) == ExitCode.USAGE
    assert main(["frobnicate"]) == ExitCode.USAGE


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--batch", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and "130" in out and "--resume" in out


NAN_MODEL = """
import torch
from torch import nn
class Boom(nn.Module):
    def __init__(self, num_classes, in_channels=3):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
    def forward(self, x):
        return self.fc(self.bn(x).mean((2, 3))) * float("nan")
"""


def test_failed_run_exits_1_and_says_how_to_resume(tmp_path, tiny_preset):
    (tmp_path / "boommod.py").write_text(NAN_MODEL)
    preset = tiny_preset(model={"arch": "boommod:Boom"})
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "engine", "--batch", str(preset), "--runs-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == ExitCode.FAILED
    assert "loss is nan" in out.stderr and "--resume" in out.stderr
    assert read_run(tmp_path / "runs" / "tiny").state == "failed"


def test_sigterm_cancels_at_a_step_boundary_and_resume_finishes(tmp_path, tiny_preset):
    preset = tiny_preset(training={"epochs": 30, "batch_size": 32, "lr": 0.05, "log_every": 1, "device": "cpu"})
    run = tmp_path / "runs" / "tiny"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "--batch", str(preset), "--runs-dir", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "cancelled" and "SIGTERM" in status["error"]
    assert (run / "weights" / "last.pt").exists()
    assert "--resume" in out

    resumed = slimlab("--batch", "--resume", str(run), "--set", "x=1")
    assert resumed.returncode == ExitCode.USAGE  # a resume runs the spec as it was
