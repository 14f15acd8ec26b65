"""Snapshots of the runs, monitor and compare screens at 80x24 and 120x40, over fixed run
directories, and of the new-run form at 80x24.

Regenerate after an intended change with `pytest tests/test_tui_snapshots_b.py --snapshot-update`
and look at the SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_tui_compare import results_run
from test_tui_runs import T0, make_run, metric_lines, write_log, write_metrics
from textual.pilot import Pilot
from textual.widgets import Input

from engine import runs
from tui.app import make_app
from tui.screens.compare import CompareScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def run_dirs(tmp_path, monkeypatch) -> Path:
    """Runs in ./runs of a temporary working directory, so no absolute path reaches the screen."""
    monkeypatch.chdir(tmp_path)
    runs_dir = Path("runs")
    done = make_run(runs_dir, "slim-vgg", "done", best=0.9125, started=T0, ended=T0 + 185,
                    stages=("train", "sparse"), epochs=2, preset="slim-demo")
    write_metrics(done, metric_lines())
    write_log(done, 14)
    make_run(runs_dir, "slim-vgg-2", "failed", stage="sparse", progress=0.4, started=T0 + 400, ended=T0 + 700,
             stages=("train", "sparse", "prune"), completed=["train"], preset="slim-demo",
             error="RunError: stage sparse: loss is nan at epoch 1 batch 5; lower training.lr")
    make_run(runs_dir, "tiny", "cancelled", progress=0.3, started=T0 + 300, ended=T0 + 3900,
             error="SIGTERM at epoch 0 step 4")
    make_run(runs_dir, "crashed", "running", progress=0.5, started=T0 + 200, heartbeat=T0 + 242)  # dead pid
    corrupt = runs.create_run_dir(runs_dir, "corrupt")
    (corrupt / "status.json").write_text('{"state": "runn')
    monkeypatch.setenv("TZ", "UTC")  # epoch lines show clock times: the same on every machine
    time.tzset()
    yield runs_dir
    monkeypatch.undo()
    time.tzset()


async def until(pilot: Pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the screen never settled"
        await pilot.pause(0.05)


async def open_runs(pilot: Pilot) -> RunsScreen:
    await pilot.press("3")
    await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and len(pilot.app.screen._order) == 5)
    await pilot.pause()
    return pilot.app.screen


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare, run_dirs, size):
    assert snap_compare(make_app(runs_dir=run_dirs), terminal_size=size, run_before=open_runs)


def test_runs_screen_new_run_form(snap_compare, run_dirs, tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "slim-demo.yaml").write_text(
        "name: slim-demo\ndescription: sparse, prune, finetune on shapes\n"
        "model: {arch: vgg, kwargs: {depth: 11, width: 0.125}}\n"
        "training: {epochs: 2, lr: 0.05, device: cpu}\n"
        "stages: [{type: train}, {type: sparse, s: 0.0001}, {type: prune, percent: 0.4}, {type: finetune}]\n")

    async def form_with_an_error(pilot: Pilot) -> None:
        await open_runs(pilot)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("enter")
        await until(pilot, lambda: getattr(pilot.app.screen, "choice", None) is not None)
        pilot.app.screen.query_one("#field-5").value = "-0.1"  # training.lr
        await until(pilot, lambda: pilot.app.screen.checked is not None and pilot.app.screen.checked.field_errors)
        # A blinking cursor is drawn or not by the clock: hold it steady so the picture is the same every run.
        for box in pilot.app.screen.query(Input):
            box.cursor_blink = False
        await pilot.pause()

    app = make_app(runs_dir=run_dirs, presets_dirs=[Path("presets")])
    assert snap_compare(app, terminal_size=(80, 24), run_before=form_with_an_error)


@pytest.mark.parametrize("size", SIZES)
def test_monitor_screen(snap_compare, run_dirs, size):
    async def open_monitor(pilot: Pilot) -> None:
        screen = await open_runs(pilot)
        screen.query_one("#runs-table").move_cursor(row=screen._order.index(str(run_dirs / "slim-vgg")))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen)
                    and pilot.app.screen.series.lines == 36 and pilot.app.screen.info is not None)
        await pilot.pause(0.2)

    assert snap_compare(make_app(runs_dir=run_dirs), terminal_size=size, run_before=open_monitor)


def test_monitor_screen_gamma_at_80x24(snap_compare, run_dirs):
    async def open_gamma(pilot: Pilot) -> None:
        await pilot.press("4")
        await until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen))
        pilot.app.open_run(run_dirs / "slim-vgg")
        await until(pilot, lambda: pilot.app.screen.series.lines == 36 and pilot.app.screen.info is not None)
        await pilot.press("left_square_bracket")
        await pilot.pause(0.2)

    assert snap_compare(make_app(runs_dir=run_dirs), terminal_size=(80, 24), run_before=open_gamma)


@pytest.mark.parametrize("size", SIZES)
def test_compare_screen(snap_compare, run_dirs, size):
    results_run(run_dirs, "big", 0.90, 1.0, T0 + 10)
    results_run(run_dirs, "small", 0.85, 0.5, T0 + 20)

    async def two_runs(pilot: Pilot) -> None:
        await pilot.press("5")
        await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen))
        screen = pilot.app.screen
        await until(pilot, lambda: screen.query_one("#compare-runs").option_count == 6)
        picker = screen.query_one("#compare-runs")
        names = [str(picker.get_option_at_index(i).prompt) for i in range(picker.option_count)]
        for name in ("big", "small"):
            picker.select(picker.get_option_at_index(names.index(name)))
        await pilot.pause(0.2)

    assert snap_compare(make_app(runs_dir=run_dirs), terminal_size=size, run_before=two_runs)
