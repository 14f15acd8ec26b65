"""Runs screen: the live table over real run directories, the new-run form, launch, cancel, resume.

The run-directory helpers here are shared with the monitor, compare and snapshot tests.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from engine import runs
from tui import launcher
from tui.screens.launch import LaunchScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
from tui.widgets.confirm import ConfirmModal

from helpers import run_async, wait_for

T0 = 1_700_000_000.0  # fixed start time: elapsed figures on screen stay the same run to run
DEAD_PID = 2**22 + 12345  # above the default pid_max: never a live process

TINY = {
    "name": "tiny",
    "model": {"arch": "vgg", "kwargs": {"depth": 11, "width": 0.125}},
    "data": {"dataset": "shapes", "num_classes": 4, "train_size": 256, "val_size": 64},
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "log_every": 2, "device": "cpu"},
    "stages": [{"type": "train"}],
}


# ---------------------------------------------------------------- run directories


def make_run(runs_dir: Path, name: str, state: str, *, stages: tuple[str, ...] = ("train",),
             stage: str | None = None, progress: float = 1.0, best: float | None = None,
             error: str | None = None, started: float = T0, ended: float | None = None,
             completed: list[str] | None = None, preset: str = "tiny", epochs: int = 1,
             heartbeat: float | None = None) -> Path:
    """A run directory as the engine leaves it, with a fixed status (times, pid) for stable screens."""
    path = runs.create_run_dir(runs_dir, name)
    stage = stage or stages[-1]
    runs.write_json(path / "status.json", {
        "state": state, "preset": preset, "progress": progress, "pid": DEAD_PID,
        "heartbeat": heartbeat or ended or started, "stages": list(stages),
        "completed": list(completed if completed is not None else (stages if state == "done" else ())),
        "stage": stage, "stage_index": stages.index(stage), "best_accuracy": best,
        "started": started, "ended": ended, "error": error,
    })
    spec = {**TINY, "training": {**TINY["training"], "epochs": epochs}, "stages": [{"type": s, "name": s} for s in stages]}
    (path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return path


def make_running(runs_dir: Path, name: str) -> tuple[Path, runs.RunWriter]:
    """A run whose process is alive (this one) with a fresh heartbeat."""
    path = runs.create_run_dir(runs_dir, name)
    (path / "spec.yaml").write_text(yaml.safe_dump(TINY))
    writer = runs.RunWriter(path)
    writer.status(state="running", preset="tiny", stages=["train"], completed=[], stage="train",
                  stage_index=0, progress=0.25, started=time.time() - 5)
    return path, writer


def metric_lines(stages: tuple[tuple[str, int], ...] = (("train", 2), ("sparse", 2)), steps: int = 8) -> list[dict]:
    """Step and epoch lines shaped like the trainer's, with smooth made-up values."""
    out: list[dict] = []
    for stage, epochs in stages:
        step = 0
        for epoch in range(epochs):
            for _ in range(steps):
                step += 1
                out.append({"t": T0, "stage": stage, "epoch": epoch, "step": step,
                            "loss": 2.0 * math.exp(-0.08 * (step + 4 * epoch)) + 0.2,
                            "lr": 0.05 * (1 + math.cos(math.pi * step / (epochs * steps))) / 2,
                            "rss": 400.0 + step})
            line = {"t": T0, "stage": stage, "epoch": epoch, "step": step, "loss": 1.0 / (epoch + 1),
                    "val_loss": 1.2 / (epoch + 1), "accuracy": 0.55 + 0.15 * epoch, "epoch_time": 1.0, "rss": 420.0}
            if stage == "sparse":
                line.update({"gamma_lt_1e-2": 0.1 * (epoch + 1), "gamma_lt_1e-3": 0.04 * (epoch + 1),
                             "gamma_q50": 0.2, "s": 1e-4})
            out.append(line)
    return out


def write_metrics(path: Path, lines: list[dict], *, extra_raw: str = "") -> None:
    with open(path / "metrics.jsonl", "a") as f:
        for rec in lines:
            f.write(json.dumps(rec) + "\n")
        f.write(extra_raw)


def write_log(path: Path, n: int = 14) -> None:
    with open(path / "log.txt", "a") as f:
        for i in range(n):
            f.write(f"12:00:{i:02d} log line {i}\n")


def write_preset(folder: Path, data: dict | None = None, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data or TINY, sort_keys=False))
    return path


# ---------------------------------------------------------------- host app and waiting


class HostApp(App):
    """The smallest app that gives the screens what the workbench gives them."""

    def __init__(self, make_screen: Callable[[], Screen], runs_dir: Path, presets_dirs: list[Path] | None = None):
        super().__init__()
        self.runs_dir = runs_dir
        self.presets_dirs = presets_dirs or []
        self._make_screen = make_screen

    def on_mount(self) -> None:
        self.push_screen(self._make_screen())


def wait_state(path: Path, states: tuple[str, ...], timeout: float = 120.0) -> runs.RunInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = runs.read_run(path)
        if info.state in states:
            return info
        time.sleep(0.2)
    out = (path / "stdout.txt").read_text() if (path / "stdout.txt").exists() else ""
    raise AssertionError(f"{path.name} still {runs.read_run(path).state} after {timeout}s; stdout:\n{out[-2000:]}")


def table_rows(screen: RunsScreen) -> dict[str, dict[str, str]]:
    table = screen.query_one("#runs-table", DataTable)
    out = {}
    for key in screen._order:
        cells = [str(c) for c in table.get_row(key)]
        out[Path(key).name] = dict(zip(("name", "preset", "stage", "status", "progress", "best", "elapsed"), cells, strict=True))
    return out


def move_cursor_to(screen: RunsScreen, name: str) -> None:
    keys = [Path(k).name for k in screen._order]
    screen.query_one("#runs-table", DataTable).move_cursor(row=keys.index(name))


# ---------------------------------------------------------------- the table


@run_async
async def test_table_shows_every_kind_of_run(tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "done-run", "done", best=0.9125, ended=T0 + 185, stages=("train", "sparse"))
    make_run(runs_dir, "failed-run", "failed", stage="train", progress=0.4, started=T0 + 10, ended=T0 + 70,
             error="RunError: stage train: loss is nan at epoch 1 batch 3")
    stale = make_run(runs_dir, "crashed-run", "running", progress=0.5, started=T0 + 20)  # dead pid, old heartbeat
    running, _ = make_running(runs_dir, "live-run")
    corrupt = runs.create_run_dir(runs_dir, "corrupt-run")
    (corrupt / "status.json").write_text('{"state": "running", "pro')
    broken = make_run(runs_dir, "broken-metrics", "done", best=0.5, started=T0 + 30, ended=T0 + 90)
    write_metrics(broken, metric_lines(), extra_raw='{"stage": "train", "loss": 1.0\nnot json at all\n')

    app = HostApp(RunsScreen, runs_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(pilot, lambda: len(screen._order) == 6, what="six rows")
        rows = table_rows(screen)
        assert rows["done-run"]["status"] == "done" and rows["done-run"]["best"] == "91.25%"
        assert rows["done-run"]["elapsed"] == "3m05s" and rows["done-run"]["stage"] == "sparse 2/2"
        assert "100%" in rows["done-run"]["progress"]
        assert rows["failed-run"]["status"] == "failed" and "40%" in rows["failed-run"]["progress"]
        assert rows["crashed-run"]["status"] == "failed"  # a dead pid with a stale heartbeat
        assert rows["live-run"]["status"] == "running" and "25%" in rows["live-run"]["progress"]
        assert rows["corrupt-run"]["status"] == "unreadable"
        assert rows["broken-metrics"]["status"] == "done"  # bad metrics lines do not hide the run
        assert list(rows)[0] == "live-run"  # newest first

        detail = screen.query_one("#runs-detail", Static)
        move_cursor_to(screen, "failed-run")
        await pilot.pause()
        assert "loss is nan at epoch 1" in str(detail.render())
        move_cursor_to(screen, "crashed-run")
        await pilot.pause()
        assert "without writing a final status" in str(detail.render())
        move_cursor_to(screen, "corrupt-run")
        await pilot.pause()
        assert "corrupt status.json" in str(detail.render())
        move_cursor_to(screen, "live-run")
        await pilot.pause()
        assert f"pid {os.getpid()}" in str(detail.render())

        # The table follows the directories: a run finishing and a new run appearing.
        runs.RunWriter(running).status(state="done", progress=1.0, ended=time.time(), best_accuracy=0.75)
        make_run(runs_dir, "new-run", "queued", progress=0.0, started=time.time() + 100)
        await wait_for(pilot, lambda: len(screen._order) == 7, what="the new run's row")
        await wait_for(pilot, lambda: table_rows(screen)["live-run"]["status"] == "done", what="live-run done")
        assert table_rows(screen)["live-run"]["best"] == "75.00%"
        assert stale.exists()


@run_async
async def test_empty_runs_dir_says_how_to_start(tmp_path):
    app = HostApp(RunsScreen, tmp_path / "nothing-here")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert "Press n to start one" in str(app.screen.query_one("#runs-detail", Static).render())
        await pilot.resize_terminal(24, 6)  # squeezed: nothing raises
        await pilot.pause(0.3)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)


@run_async
async def test_enter_opens_the_monitor_on_the_selected_run(tmp_path):
    runs_dir = tmp_path / "runs"
    path = make_run(runs_dir, "done-run", "done", best=0.7, ended=T0 + 60, stages=("train", "sparse"))
    write_metrics(path, metric_lines())
    make_run(runs_dir, "older", "done", started=T0 - 100, ended=T0 - 50)
    app = HostApp(RunsScreen, runs_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen._order) == 2, what="rows")
        screen.query_one("#runs-table", DataTable).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen), what="the monitor")
        monitor = app.screen
        assert monitor.run_path == path
        await wait_for(pilot, lambda: len(monitor.series.loss.xs) == 32, what="the run's metrics")
        assert monitor.query_one("#plot-loss").has_data
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back on runs")


@run_async
async def test_enter_uses_the_apps_open_run_when_it_has_one(tmp_path):
    runs_dir = tmp_path / "runs"
    path = make_run(runs_dir, "done-run", "done", ended=T0 + 60)
    opened: list[Path] = []

    class WithOpenRun(HostApp):
        def open_run(self, p: Path) -> None:
            opened.append(p)

    app = WithOpenRun(RunsScreen, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen._order, what="rows")
        await pilot.press("enter")
        await pilot.pause()
        assert opened == [path]


# ---------------------------------------------------------------- new run form


async def open_form(pilot: Pilot, app: App, preset_index: int = 0) -> LaunchScreen:
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen), what="the launch dialog")
    form = app.screen
    for _ in range(preset_index):
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: form.choice is not None, what="the form")
    return form


def field(form: LaunchScreen, key: str) -> Input:
    index = [f.key for f in form.fields].index(key)
    return form.query_one(f"#field-{index}", Input)


def launch_errors(form: LaunchScreen) -> str:
    return str(form.query_one("#launch-errors", Static).render())


def field_error(form: LaunchScreen, key: str) -> str:
    index = [f.key for f in form.fields].index(key)
    return str(form.query_one(f"#error-{index}", Static).render())


@run_async
async def test_new_run_form_shows_errors_and_launches_nothing(tmp_path):
    runs_dir = tmp_path / "runs"
    slim = {**TINY, "name": "slim", "stages": [{"type": "train"}, {"type": "sparse", "s": 1e-4},
                                               {"type": "prune", "percent": 0.3}]}
    presets = tmp_path / "presets"
    write_preset(presets, slim, "a-slim")
    (presets / "b-broken.yaml").write_text("model: [unclosed\n")
    app = HostApp(RunsScreen, runs_dir, [presets, tmp_path / "missing-dir"])
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(pilot, app)
        assert [f.key for f in form.fields] == [
            "output.name", "model.arch", "data.dataset", "training.epochs", "training.batch_size",
            "training.lr", "training.amp", "training.device", "stages.1.s", "stages.2.percent"]
        assert field(form, "stages.1.s").value == "0.0001"
        assert form.presets[1].error and "unreadable" in form.presets[1].error

        field(form, "training.lr").value = "-1"
        field(form, "model.arch").value = "vggg"
        field(form, "stages.2.percent").value = "1.5"
        field(form, "output.name").value = "../escape"
        await wait_for(pilot, lambda: "greater than 0" in field_error(form, "training.lr"), what="the lr error")
        assert "percent 1.5 is outside [0, 1)" in field_error(form, "stages.2.percent")
        assert "plain directory name" in field_error(form, "output.name")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "nothing was launched" in launch_errors(form), what="the refusal")
        assert not app._notifications  # said in the form, not in a toast over it
        assert isinstance(app.screen, LaunchScreen)  # still open: nothing launched
        assert not runs_dir.exists() or not any(runs_dir.iterdir())

        # The arch error comes from the name check, which runs once the schema passes.
        field(form, "training.lr").value = "0.05"
        field(form, "stages.2.percent").value = "0.3"
        field(form, "output.name").value = "ok-name"
        await wait_for(pilot, lambda: "unknown model 'vggg'" in field_error(form, "model.arch"), what="the arch error")
        assert "did you mean 'vgg'" in field_error(form, "model.arch")
        assert field_error(form, "training.lr") == "" and form.checked is not None and form.checked.spec is None
        field(form, "output.name").value = "ok-name-2"
        await wait_for(pilot, lambda: "nothing was launched" not in launch_errors(form), what="the refusal gone")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "nothing was launched" in launch_errors(form), what="the second refusal")
        assert isinstance(app.screen, LaunchScreen)
        assert not runs_dir.exists() or not any(runs_dir.iterdir())

        await pilot.press("escape")  # back to the preset list
        await pilot.pause()
        assert form.choice is None
        await pilot.press("escape")  # closed
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="dialog closed")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.slow
@run_async
async def test_launch_runs_as_a_process_that_outlives_the_app(tmp_path):
    runs_dir = tmp_path / "runs"
    presets = tmp_path / "presets"
    write_preset(presets)
    app = HostApp(RunsScreen, runs_dir, [presets])
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, app)
        field(form, "output.name").value = "from-tui"
        field(form, "training.epochs").value = "1"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="dialog closed")
        path = runs_dir / "from-tui"
        spec = yaml.safe_load((path / "spec.yaml").read_text())
        assert spec["output"]["name"] == "from-tui" and spec["training"]["epochs"] == 1
        await wait_for(pilot, lambda: str(path) in app.screen._order, what="the new row")
        assert app.screen.selected_key() == str(path)
    # The app is gone; the run is not.
    info = wait_state(path, ("done", "failed", "cancelled"))
    assert info.state == "done", info.error
    assert (path / "weights" / "best.pt").exists() and (path / "summary.json").exists()

    # A fresh workbench re-attaches by reading the directory.
    app2 = HostApp(RunsScreen, runs_dir, [presets])
    async with app2.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app2.screen._order, what="rows")
        assert table_rows(app2.screen)["from-tui"]["status"] == "done"


@pytest.mark.slow
@run_async
async def test_cancel_then_resume_a_launched_run(tmp_path):
    runs_dir = tmp_path / "runs"
    presets = tmp_path / "presets"
    data = {**TINY["data"], "train_size": 1024}  # 64 steps: the cancel lands mid-stage
    write_preset(presets, {**TINY, "data": data, "training": {**TINY["training"], "epochs": 2, "log_every": 1}})
    app = HostApp(RunsScreen, runs_dir, [presets])
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, app)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="dialog closed")
        screen = app.screen
        path = runs_dir / "tiny"
        await wait_for(pilot, lambda: screen.selected_key() == str(path), what="the new row selected")

        # Cancel once it is training (a metrics line is written after an optimizer step).
        deadline = time.monotonic() + 120
        while not ((path / "metrics.jsonl").exists() and runs.read_run(path).state == "running"):
            assert time.monotonic() < deadline, "the run never started training"
            await pilot.pause(0.05)
        pid = runs.read_run(path).pid
        # Frozen while the question is asked, so a fast machine cannot finish the stage before the
        # SIGTERM arrives; it is delivered when the process runs again.
        os.kill(pid, signal.SIGSTOP)
        try:
            assert not (path / "weights" / "train.pt").exists(), "the stage ended before the cancel"
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the question")
            await pilot.press("y")
            await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmModal), what="the answer")
            await pilot.pause(0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_for(pilot, lambda: runs.read_run(path).state == "cancelled", timeout=60, what="cancelled")
        assert (path / "weights" / "last.pt").exists()
        await wait_for(pilot, lambda: table_rows(screen)["tiny"]["status"] == "cancelled", what="row cancelled")
        await wait_for(pilot, lambda: pid not in launcher.children().values(), what="the process gone")

        await pilot.press("c")  # nothing to cancel now: a warning, no crash
        await pilot.press("R")
        await wait_for(pilot, lambda: runs.read_run(path).state in ("running", "done"), timeout=60, what="resumed")
        assert form is not None
    info = wait_state(path, ("done", "failed", "cancelled"))
    assert info.state == "done", info.error
    assert "(resumed)" in (path / "log.txt").read_text()
    assert not (path / "weights" / "last.pt").exists()  # a finished stage removes its resume point


@run_async
async def test_cancel_and_resume_refuse_runs_in_the_wrong_state(tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "done-run", "done", ended=T0 + 5)
    app = HostApp(RunsScreen, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen._order, what="rows")
        await pilot.press("c")
        await pilot.press("R")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("not running" in m for m in messages)
        assert any("only failed or cancelled runs resume" in m for m in messages)
    assert runs.read_run(runs_dir / "done-run").state == "done"


def test_cancel_never_signals_the_workbench_itself(tmp_path):
    # prepare_run_dir writes the launcher's pid into a queued run; a stale copy must not be signalled.
    path, writer = make_running(tmp_path, "mine")
    with pytest.raises(launcher.LaunchError, match="no live process"):
        launcher.cancel(path)
    assert writer.path == path


def test_a_child_that_dies_before_writing_status_is_recorded(tmp_path):
    path = runs.create_run_dir(tmp_path, "broken")
    (path / "spec.yaml").write_text("model: {arch: nosuch}\n")  # fails validation in the child
    runs.RunWriter(path).status(state="queued", preset="broken")
    launcher._spawn(path, resume=False)
    info = wait_state(path, ("failed", "cancelled"), timeout=60)
    assert "before writing a final status" in info.error and "nosuch" in info.error


@run_async
async def test_in_the_workbench_enter_switches_to_the_monitor_mode(tmp_path):
    from tui.app import make_app
    from tui.screens.compare import CompareScreen

    runs_dir = tmp_path / "runs"
    path = make_run(runs_dir, "done-run", "done", best=0.7, ended=T0 + 60, stages=("train", "sparse"))
    write_metrics(path, metric_lines())
    app = make_app(tmp_path, runs_dir=runs_dir, presets_dirs=[])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen._order, what="runs")
        runs_screen = app.screen
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "monitor", what="the monitor mode")
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_for(pilot, lambda: monitor.run_path == path and len(monitor.series.loss.xs) == 32, what="plots")
        await pilot.press("escape")  # back to the runs mode
        await wait_for(pilot, lambda: app.screen is runs_screen, what="runs again")
        await pilot.press("5")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        await pilot.press("4")
        await wait_for(pilot, lambda: app.screen is monitor, what="the same monitor")


@run_async
async def test_cells_that_grow_are_shown_whole(tmp_path):
    # A run appears as "queued" and turns "running" a moment later: the column widens with it.
    path = make_run(tmp_path, "demo", "queued", progress=0.0)
    app = HostApp(RunsScreen, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: table_rows(screen).get("demo", {}).get("status") == "queued", 10, "the run")
        writer = runs.RunWriter(path)
        writer.status(state="running", progress=0.3, pid=os.getpid(), heartbeat=time.time())
        await wait_for(pilot, lambda: table_rows(screen)["demo"]["status"] == "running", 10, "the new state")
        await pilot.pause(0.2)
        table = screen.query_one("#runs-table", DataTable)
        assert " running " in table.render_line(1).text, table.render_line(1).text
