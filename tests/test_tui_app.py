"""The app shell: the CLI's split between headless and workbench, modes on number keys, `?`
help, the command palette, navigation between screens, resizing, and no torch before the
first frame."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette

from engine import checkpoint, runs
from tui import cli
from tui.app import SlimlabApp, make_app, screen_class
from tui.help import HelpScreen, declared_bindings
from tui.palette import ActionsProvider
from tui.screens.checkpoints import CheckpointsScreen
from tui.screens.inspector import InspectorScreen

from helpers import run_async, wait_for

SIZE = (100, 30)
MODES = {"1": "checkpoints", "2": "inspector", "3": "runs", "4": "monitor", "5": "compare"}
ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})


def make_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, checkpoint.build_model(ARCH), ARCH, meta={"epoch": 1})
    return path


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


# ---------------------------------------------------------------- the console script


def test_headless_commands_never_import_textual(tmp_path):
    out = python("""
        import sys
        from tui.cli import main
        code = main(["--version"])
        print("CODE", code, any(m == "textual" or m.startswith("textual.") for m in sys.modules))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "slimlab" in out.stdout and "CODE 0 False" in out.stdout


def test_workbench_arguments():
    args = cli.workbench_parser().parse_args(["ckpts", "--runs-dir", "elsewhere", "--presets-dir", "p"])
    assert args.path == Path("ckpts") and args.runs_dir == Path("elsewhere") and args.presets_dirs == [Path("p")]
    assert cli.workbench_parser().parse_args([]).path is None


def test_missing_path_is_refused_before_the_app_starts(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_make_app_defaults(tmp_path):
    app = make_app()
    assert app.root_path == Path.cwd() and app.runs_dir == Path("runs")
    assert app.presets_dirs == [Path("presets"), Path("~/.config/slimlab/presets").expanduser()]
    app = make_app(tmp_path, runs_dir=tmp_path / "r", presets_dirs=[tmp_path / "p"])
    assert app.root_path == tmp_path and app.runs_dir == tmp_path / "r" and app.presets_dirs == [tmp_path / "p"]
    assert isinstance(app, SlimlabApp)


def test_torch_is_not_imported_before_the_first_frame(tmp_path):
    make_checkpoint(tmp_path / "m.pt")
    out = python("""
        import sys
        from tui.app import make_app

        app = make_app()
        seen = {}

        def painted():
            seen["torch"] = "torch" in sys.modules
            seen["tree"] = len(app.screen.tree.root.children)
            app.exit()

        app.call_after_refresh(painted)
        app.run(headless=True, size=(100, 30))
        print("TORCH", seen["torch"])
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "TORCH False" in out.stdout


# ---------------------------------------------------------------- modes, help, palette


@run_async
async def test_number_keys_switch_screens(tmp_path):
    app = make_app(tmp_path, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        assert app.current_mode == "checkpoints" and isinstance(app.screen, CheckpointsScreen)
        for key in ("2", "3", "4", "5", "1", "3", "2"):
            await pilot.press(key)
            await pilot.pause()
            assert app.current_mode == MODES[key]
            assert isinstance(app.screen, screen_class(MODES[key]))
            assert app.get_screen(MODES[key]) is app.screen


@run_async
async def test_a_checkpoint_path_opens_straight_in_the_inspector(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        assert app.current_mode == "inspector"
        screen = app.screen
        await wait_for(pilot, lambda: screen.ready, what="the model")
        assert screen.path == path
        await pilot.press("1")
        await pilot.pause()
        assert app.screen.tree.path == tmp_path


@run_async
async def test_question_mark_lists_the_screens_and_global_keys(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_cls in (("1", CheckpointsScreen), ("2", InspectorScreen)):
            await pilot.press(key)
            await pilot.press("question_mark")
            await pilot.pause()
            help_screen = app.screen
            assert isinstance(help_screen, HelpScreen)
            listed = dict(help_screen.own)
            for binding in declared_bindings(screen_cls):
                assert listed[app.get_key_display(binding) if not binding.key_display else binding.key_display] \
                    == binding.description
            everywhere = dict(help_screen.everywhere)
            assert everywhere["q"] == "Quit" and everywhere["?"] == "Help" and everywhere["1"] == "Checkpoints"
            title = str(help_screen.query_one(".modal-title").content)
            assert title == f"Keys: {screen_cls.NAME}"  # the screen's name, not its class
            assert everywhere["5"] == "Compare" and "Command palette" in everywhere["^p"]
            await pilot.press("1")  # mode keys are off while a modal is open
            assert app.screen is help_screen
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, screen_cls)


@run_async
async def test_palette_lists_every_action_of_every_screen(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        provider = ActionsProvider(app.screen)
        names = [name for name, _, _ in provider.commands()]
        for mode, (_, title) in SlimlabApp.MODE_INFO.items():
            for binding in declared_bindings(screen_class(mode)):
                assert f"{title}: {binding.description}" in names
        assert "Quit" in names and "Inspector: Sweep" in names and "Runs: New run" in names

        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), 10, "the palette")
        palette = app.screen
        listed = palette.query_one(CommandList)
        await wait_for(pilot, lambda: listed.option_count >= len(names), 10, "the discovered commands")
        prompts = [str(listed.get_option_at_index(i).prompt) for i in range(listed.option_count)]
        assert "Inspector: Prune" in " ".join(prompts)
        await pilot.press(*"inspector log")
        await wait_for(pilot, lambda: any("Inspector: Log" in str(listed.get_option_at_index(i).prompt)
                                          for i in range(listed.option_count)), 10, "the search hit")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.current_mode == "inspector", 10, "the palette to switch screens")


@run_async
async def test_open_run_shows_the_run_on_the_monitor(tmp_path):
    run = runs.create_run_dir(tmp_path / "runs", "demo")
    runs.RunWriter(run).status(state="done", preset="demo", progress=1.0)
    app = make_app(tmp_path, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run)
        await wait_for(pilot, lambda: app.current_mode == "monitor", 10, "the monitor")
        monitor = app.get_screen("monitor")
        assert monitor is app.screen
        await wait_for(pilot, lambda: monitor.run_path == run, 10, "the run on the monitor")


@pytest.mark.parametrize("mode", ["checkpoints", "inspector", "runs", "monitor", "compare"])
@run_async
async def test_tiny_terminal_on_every_screen(tmp_path, mode):
    make_checkpoint(tmp_path / "m.pt")
    app = make_app(tmp_path, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await app.switch_mode(mode)
        await pilot.pause()
        await pilot.resize_terminal(40, 10)
        await pilot.pause()
        await pilot.press("down", "question_mark")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.current_mode == mode
