"""The new-run dialog: where presets come from, and what the form lets through."""

from __future__ import annotations

from pathlib import Path

from test_tui_runs import TINY, HostApp, write_preset
from textual.widgets import Input, OptionList, Static

from engine import presets
from tui.screens.launch import LaunchScreen
from tui.screens.runs import RunsScreen

from helpers import run_async, wait_for


async def open_picker(pilot, app) -> LaunchScreen:
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen), what="the launch dialog")
    await pilot.pause()
    return app.screen


@run_async
async def test_picker_always_offers_the_builtin_presets_and_a_typed_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: no ./presets here
    own = write_preset(tmp_path / "mine", {**TINY, "name": "mine"}, "mine")
    elsewhere = write_preset(tmp_path / "deep" / "er", {**TINY, "name": "typed"}, "typed")
    app = HostApp(RunsScreen, tmp_path / "runs", [own.parent, tmp_path / "no-such-dir"])
    async with app.run_test(size=(80, 24)) as pilot:
        picker = await open_picker(pilot, app)
        listed = {(p.name, p.source) for p in picker.presets}
        assert ("mine", "mine/mine.yaml") in listed
        for name in presets.names():
            assert any(p.path.resolve() == presets.builtin(name).resolve() and p.source == "built-in"
                       for p in picker.presets)
        assert picker.presets[0].name == "mine"  # the user's folders come first
        assert picker.query_one("#launch-presets", OptionList).option_count == len(picker.presets)
        assert str(picker.query_one("#launch-errors", Static).render()) == ""

        await pilot.press("tab")  # to the path field
        assert picker.focused is picker.query_one("#launch-path", Input)
        await pilot.press(*"nope.yaml", "enter")
        await wait_for(pilot, lambda: "nope.yaml: no such file" in str(picker.query_one("#launch-errors", Static).render()),
                       what="the refusal")
        picker.query_one("#launch-path", Input).value = str(elsewhere.relative_to(tmp_path))
        await pilot.press("enter")
        await wait_for(pilot, lambda: picker.choice is not None, what="the form")
        assert picker.choice.name == "typed" and picker.choice.path == Path("deep/er/typed.yaml")
        await pilot.press("escape")  # back to the picker, then the built-in demo
        await pilot.pause()
        demo = next(i for i, p in enumerate(picker.presets) if p.name == "demo")
        picker.query_one("#launch-presets", OptionList).highlighted = demo
        picker.query_one("#launch-presets", OptionList).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: picker.choice is not None and picker.checked is not None, what="the demo form")
        assert picker.choice.source == "built-in" and picker.checked.spec is not None
