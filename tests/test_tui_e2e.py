"""End to end: the real `slimlab` console script in a real terminal (tmux) of 80x24, driven by keys.

Open a checkpoint, move the threshold, save the plan, shrink the terminal below 80x24 and back,
switch to the runs screen, launch a tiny preset and watch it finish, quit. Skipped, with the
reason, where tmux is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from engine import checkpoint, runs

pytestmark = pytest.mark.slow

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
TINY = {
    "name": "tiny-e2e",
    "model": {"arch": "vgg", "kwargs": {"depth": 11, "width": 0.125}},
    "data": {"dataset": "shapes", "num_classes": 4, "train_size": 128, "val_size": 32},
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "log_every": 2, "device": "cpu"},
    "stages": [{"type": "train"}],
}


def slimlab_script() -> str | None:
    beside = Path(sys.executable).parent / "slimlab"
    return str(beside) if beside.exists() else shutil.which("slimlab")


TMUX = shutil.which("tmux")
SCRIPT = slimlab_script()


class Terminal:
    """One tmux session running a command; keys in, screen text out."""

    def __init__(self, command: str, cwd: Path, width: int = 80, height: int = 24) -> None:
        self.name = f"slimlab-e2e-{uuid.uuid4().hex[:8]}"
        # COLUMNS/LINES (set by pytest-xdist's workers) would pin Textual's size and hide a resize
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"OMP_NUM_THREADS": "2"}
        subprocess.run([TMUX, "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        "-c", str(cwd), command], check=True, env=env)

    def screen(self) -> str:
        out = subprocess.run([TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run([TMUX, "send-keys", "-t", self.name, key], check=True)
            time.sleep(0.15)

    def resize(self, width: int, height: int) -> None:
        subprocess.run([TMUX, "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)], check=True)

    def alive(self) -> bool:
        return subprocess.run([TMUX, "has-session", "-t", self.name], capture_output=True).returncode == 0

    def wait(self, condition: Callable[[str], object], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if condition(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; the screen:\n{text}")

    def close(self) -> None:
        subprocess.run([TMUX, "kill-session", "-t", self.name], capture_output=True)


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = checkpoint.build_model(ARCH)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.tensor(rng.uniform(0.001, 1.0, m.weight.numel()), dtype=torch.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, model, ARCH, meta={"epoch": 1})
    return path


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux): the end-to-end test drives a real terminal")
@pytest.mark.skipif(SCRIPT is None, reason="the slimlab console script is not installed (pip install -e .)")
def test_inspect_save_launch_and_watch_a_run(tmp_path):
    make_checkpoint(tmp_path / "ckpts" / "model.pt")
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "tiny-e2e.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    term = Terminal(f"{SCRIPT} ckpts/model.pt --runs-dir runs --presets-dir presets", tmp_path)
    try:
        term.wait(lambda s: "channels in 9 groups" in s and "[p] percent 50.0%" in s, 120, "the inspector")
        screen = term.screen()
        assert "1 Checkpoints" in screen and "q quit" in screen  # the screen bar, at 80 columns
        term.keys("Right", "Right")
        term.wait(lambda s: "[p] percent 52.0%" in s, 20, "the threshold to move")

        term.keys("s")
        term.wait(lambda s: "Save plan" in s, 20, "the save dialog")
        term.keys("Enter")
        plan_path = tmp_path / "ckpts" / "model.plan.json"
        deadline = time.monotonic() + 20
        while not plan_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert plan_path.exists(), term.screen()
        assert runs.read_json(plan_path)["options"]["percent"] == pytest.approx(0.52)

        term.resize(50, 15)
        term.wait(lambda s: "terminal too small (need 80x24)" in s, 20, "the too-small message")
        term.resize(80, 24)
        term.wait(lambda s: "[p] percent 52.0%" in s, 20, "the inspector again")

        term.keys("3")
        term.wait(lambda s: "Runs in" in s, 20, "the runs screen")
        term.keys("n")
        term.wait(lambda s: "tiny-e2e" in s, 30, "the preset list")
        term.keys("Enter")
        term.wait(lambda s: "New run from tiny-e2e" in s, 30, "the run form")
        term.keys("C-s")
        run_dir = tmp_path / "runs" / "tiny-e2e"
        deadline = time.monotonic() + 30
        while not run_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run_dir.exists(), term.screen()

        def row_done(screen: str) -> bool:
            return any("tiny-e2e" in line and " done" in line for line in screen.splitlines())

        term.wait(row_done, 240, "the run to finish")
        assert runs.read_run(run_dir).state == "done"
        assert (run_dir / "weights" / "best.pt").exists()

        term.keys("q")
        deadline = time.monotonic() + 30
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), "q did not quit the workbench"
    finally:
        term.close()
