"""Snapshots of the checkpoint browser and the inspector at 80x24 and 120x40, and of what
replaces them below 80x24.

Files are created under fixed relative names in a temporary working directory, with fixed
seeds and gammas, so paths, sizes and figures on screen are the same on every machine. The
checkpoint's gammas look sparse-trained (tests/helpers.py), and the inspector is shown at 68%,
where the threshold sits in the crowded low end of |gamma|.
Regenerate with `pytest tests/test_tui_snapshots_a.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_tui_runs import T0, make_run
from textual.pilot import Pilot

from engine import runs
from tui.app import make_app

from helpers import make_sparse_checkpoint, wait_for

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_sparse_checkpoint(Path("ckpts/sparse.pt"))
    Path("ckpts/notes.txt").write_text("not shown: not a checkpoint")
    make_run(Path("runs"), "slim-vgg", "done", best=0.9125, started=T0, ended=T0 + 185,
             stages=("train", "sparse"), preset="demo")
    live = make_run(Path("runs"), "live", "running", stages=("train", "sparse", "prune", "finetune"),
                    stage="sparse", progress=0.5, best=0.375, completed=["train"], preset="demo")
    status = runs.read_json(live / "status.json")
    runs.write_json(live / "status.json", {**status, "pid": os.getpid(), "heartbeat": 4e9})
    return tmp_path


async def at_68_percent(pilot: Pilot) -> None:
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.ready, what="the checkpoint")
    await pilot.press("shift+right", *["right"] * 8)
    await wait_for(pilot, lambda: screen.settings.percent == 0.68, 10, "68%")
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", SIZES)
def test_checkpoints_screen(snap_compare, workdir, size):
    app = make_app(Path("."))

    async def run_before(pilot: Pilot) -> None:
        screen = pilot.app.screen
        tree = screen.tree
        await wait_for(pilot, lambda: len(tree.root.children) == 2, what="the tree")
        ckpts, run_folder = tree.root.children
        run_folder.expand()
        await wait_for(pilot, lambda: len(run_folder.children) == 2, what="runs expanded")
        ckpts.expand()
        await wait_for(pilot, lambda: ckpts.children, what="ckpts expanded")
        tree.move_cursor(ckpts.children[0])
        await wait_for(pilot, lambda: screen.panel.kind == "peek", what="the checkpoint's panel")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_inspector_screen(snap_compare, workdir, size):
    assert snap_compare(make_app(Path("ckpts/sparse.pt")), terminal_size=size, run_before=at_68_percent)


def test_inspector_linear_gamma_axis(snap_compare, workdir):
    async def run_before(pilot: Pilot) -> None:
        await at_68_percent(pilot)
        await pilot.press("v")
        await pilot.pause(0.2)

    assert snap_compare(make_app(Path("ckpts/sparse.pt")), terminal_size=(80, 24), run_before=run_before)


def test_inspector_override_dialog(snap_compare, workdir):
    async def run_before(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await at_68_percent(pilot)
        await pilot.press("down", "down", "enter")
        await wait_for(pilot, lambda: pilot.app.screen is not screen, 10, "the dialog")
        await pilot.press(*"keep 0.5")
        await pilot.pause(0.2)

    assert snap_compare(make_app(Path("ckpts/sparse.pt")), terminal_size=(80, 24), run_before=run_before)


def test_too_small_terminal(snap_compare, workdir):
    async def run_before(pilot: Pilot) -> None:
        await pilot.pause(0.3)

    assert snap_compare(make_app(Path(".")), terminal_size=(50, 15), run_before=run_before)
