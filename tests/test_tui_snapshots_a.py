"""Snapshots of the checkpoint browser and the inspector on a deterministic checkpoint.

Files are created under fixed relative names in a temporary working directory, with fixed
seeds and gammas, so paths, sizes and figures on screen are the same on every machine.
Regenerate with `pytest tests/test_tui_snapshots_a.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from textual.pilot import Pilot

from engine import checkpoint
from tui.app import make_app

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
SIZE = (100, 30)


def make_checkpoint(path: Path) -> Path:
    """Fixed weights; BatchNorm gammas: 40% near zero (as after sparse training), the rest up to 1."""
    torch.manual_seed(0)
    model = checkpoint.build_model(ARCH)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.weight.numel()
                small = rng.random(n) < 0.4
                m.weight.copy_(torch.tensor(rng.uniform(0.001, 1.0, n) * np.where(small, 0.02, 1.0),
                                            dtype=torch.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, model, ARCH, meta={"epoch": 3, "stage": "sparse", "metrics": {"accuracy": 0.75, "val_loss": 0.6}})
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_checkpoint(Path("ckpts/model.pt"))
    make_checkpoint(Path("ckpts/sparse/epoch-10.pt"))
    Path("ckpts/notes.txt").write_text("not shown: not a checkpoint")
    return tmp_path


async def settle(pilot: Pilot, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if condition():
            await pilot.pause(0.2)
            return
    raise AssertionError("the screen did not settle")


def test_checkpoints_screen(snap_compare, workdir):
    app = make_app(Path("ckpts"))

    async def run_before(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await settle(pilot, lambda: len(screen.tree.root.children) == 2)
        await pilot.press("down", "down")
        await settle(pilot, lambda: screen.panel.kind == "peek")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_inspector_screen(snap_compare, workdir):
    app = make_app(Path("ckpts/model.pt"))

    async def run_before(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await settle(pilot, lambda: screen.ready)
        await pilot.press("right", "right")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_inspector_override_modal(snap_compare, workdir):
    app = make_app(Path("ckpts/model.pt"))

    async def run_before(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await settle(pilot, lambda: screen.ready)
        await pilot.press("down", "enter")
        await settle(pilot, lambda: pilot.app.screen is not screen)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
