"""Keys of the runs and monitor screens that end or remove work ask first (no is the default),
and a failed run can be edited and launched again."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml
from test_tui_runs import T0, HostApp, make_run, move_cursor_to, wait_state
from textual.widgets import Label

from engine import runs
from tui import launcher
from tui.app import make_app
from tui.screens.launch import LaunchScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
from tui.widgets.confirm import ConfirmModal

from helpers import run_async, wait_for


def live_run(runs_dir: Path, name: str) -> tuple[Path, subprocess.Popen]:
    """A run whose pid is a live process of its own (a sleep standing in for training)."""
    proc = subprocess.Popen(["sleep", "120"])
    path = make_run(runs_dir, name, "running", progress=0.3, started=time.time() - 5)
    status = runs.read_json(path / "status.json")
    runs.write_json(path / "status.json", {**status, "pid": proc.pid, "heartbeat": time.time()})
    return path, proc


def title(app) -> str:
    return str(app.screen.query_one(".modal-title", Label).content)


@run_async
async def test_cancel_asks_first_and_no_is_the_default(tmp_path):
    runs_dir = tmp_path / "runs"
    path, proc = live_run(runs_dir, "training")
    try:
        app = make_app(tmp_path, runs_dir=runs_dir, presets_dirs=[])
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen._order, what="runs")
            runs_screen = app.screen
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the question")
            assert title(app) == "Cancel run training?"
            await pilot.press("enter")  # the default: no
            await wait_for(pilot, lambda: app.screen is runs_screen, what="back")
            await pilot.press("c", "n")
            await pilot.pause(0.3)
            assert proc.poll() is None  # still running after enter and n

            app.open_run(path)  # the monitor's c asks the same
            await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen), what="the monitor")
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the monitor's question")
            await pilot.press("escape")
            await pilot.pause(0.3)
            assert proc.poll() is None
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="asked again")
            await pilot.press("y")
            await wait_for(pilot, lambda: proc.poll() is not None, what="the process to get SIGTERM")
    finally:
        proc.kill()
        proc.wait()


@run_async
async def test_delete_asks_and_leaves_live_runs_alone(tmp_path):
    runs_dir = tmp_path / "runs"
    failed = make_run(runs_dir, "broken", "failed", progress=0.4, started=T0, ended=T0 + 60, error="RunError: nan")
    (failed / "weights").mkdir(exist_ok=True)
    (failed / "weights" / "last.pt").write_bytes(b"x" * 2048)
    live, proc = live_run(runs_dir, "training")
    try:
        app = HostApp(RunsScreen, runs_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: len(screen._order) == 2, what="rows")
            move_cursor_to(screen, "training")
            await pilot.press("d")
            await pilot.pause()
            assert app.screen is screen and live.exists()
            assert any("cancel it first" in n.message for n in app._notifications)

            move_cursor_to(screen, "broken")
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the question")
            assert title(app) == "Delete run broken?"
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert failed.exists()
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="asked again")
            await pilot.press("y")
            await wait_for(pilot, lambda: not failed.exists(), what="the run deleted")
            await wait_for(pilot, lambda: [Path(k).name for k in screen._order] == ["training"], what="the table")
    finally:
        proc.kill()
        proc.wait()


@run_async
async def test_a_failed_run_is_edited_and_relaunched(tmp_path):
    runs_dir = tmp_path / "runs"
    failed = make_run(runs_dir, "gpu-run", "failed", progress=0.0, started=T0, ended=T0 + 3,
                      error="training.device: cuda asked for, but CUDA is not available here; use cpu or auto")
    spec = yaml.safe_load((failed / "spec.yaml").read_text())
    spec["training"]["device"] = "cuda:64"  # no machine has that many
    (failed / "spec.yaml").write_text(yaml.safe_dump(spec))
    app = HostApp(RunsScreen, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen._order, what="rows")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.checked is not None,
                       what="the form on the run's spec")
        form = app.screen
        assert "Edit the run gpu-run" in str(form.query_one("#launch-title", Label).content)
        keys = [f.key for f in form.fields]
        device = form.query_one(f"#field-{keys.index('training.device')}")
        error = str(form.query_one(f"#error-{keys.index('training.device')}").render())
        assert "cuda:64" in error  # the reason it failed, before anything starts
        device.value = "cpu"
        await wait_for(pilot, lambda: form.checked is not None and form.checked.spec is not None, what="valid")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen, what="launched")
    new = runs_dir / "gpu-run-2"
    try:
        assert yaml.safe_load((new / "spec.yaml").read_text())["training"]["device"] == "cpu"
        assert runs.read_run(failed).state == "failed"  # the failed run is left as it was
    finally:
        try:
            launcher.cancel(new)
        except launcher.LaunchError:
            pass  # already finished
        wait_state(new, ("done", "failed", "cancelled"))
