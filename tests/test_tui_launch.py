"""The new-run dialog: where presets come from, and what the form lets through."""

from __future__ import annotations

from pathlib import Path

import yaml
from test_tui_runs import TINY, HostApp, field, field_error, write_preset
from textual import events
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


def preset_with(tmp_path: Path, name: str = "p", **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["name"] = name
    for key, value in changes.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return write_preset(tmp_path / "presets", data, name)


async def open_preset_form(pilot, app, name: str) -> LaunchScreen:
    form = await open_picker(pilot, app)
    picker = form.query_one("#launch-presets", OptionList)
    picker.highlighted = next(i for i, p in enumerate(form.presets) if p.name == name)
    picker.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: form.choice is not None and form.checked is not None, what="the checked form")
    return form


def launch_errors(form: LaunchScreen) -> str:
    return str(form.query_one("#launch-errors", Static).render())


async def settle_check(pilot, form: LaunchScreen) -> None:
    await wait_for(pilot, lambda: not form.workers._workers or all(
        w.is_finished for w in form.workers._workers if w.group == "launch-check"), what="the check")
    await pilot.pause(0.1)


@run_async
async def test_device_and_amp_are_checked_against_this_machine(tmp_path):
    import torch

    cuda = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"  # one this machine lacks
    preset_with(tmp_path, "gpu", training__device=cuda)
    runs_dir = tmp_path / "runs"
    app = HostApp(RunsScreen, runs_dir, [tmp_path / "presets"])
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_preset_form(pilot, app, "gpu")
        problem = field_error(form, "training.device")
        assert "CUDA is not available" in problem or "CUDA device(s)" in problem
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "nothing was launched" in launch_errors(form), what="the refusal")
        assert "fix training.device first" in launch_errors(form)
        assert not runs_dir.exists() or not any(runs_dir.iterdir())

        field(form, "training.device").value = "cpu"
        await wait_for(pilot, lambda: field_error(form, "training.device") == "", what="cpu accepted")
        form.query_one(f"#field-{[f.key for f in form.fields].index('training.amp')}").value = "fp16"
        await wait_for(pilot, lambda: "fp16 autocast needs CUDA" in field_error(form, "training.amp"), what="amp")
        assert form.checked.spec is None


@run_async
async def test_every_key_an_error_names_gets_a_field(tmp_path):
    preset_with(tmp_path, "cifar", data={"dataset": "cifar10", "path": "data/cifar10"})
    preset_with(tmp_path, "kd", stages=[{"type": "train"}, {"type": "distill", "teacher": "teacher.pt"}])
    (tmp_path / "cifar-files").mkdir()
    (tmp_path / "teacher.pt").write_bytes(b"")
    app = HostApp(RunsScreen, tmp_path / "runs", [tmp_path / "presets"])
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_preset_form(pilot, app, "cifar")
        assert "data/cifar10 does not exist" in field_error(form, "data.path")  # the path has its own field
        field(form, "data.path").value = str(tmp_path / "cifar-files")
        await wait_for(pilot, lambda: field_error(form, "data.path") == "", what="the path accepted")
        await pilot.press("escape")  # back to the picker
        await pilot.pause()
        await pilot.press("escape")  # closed
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="closed")
        form = await open_preset_form(pilot, app, "kd")
        keys = [f.key for f in form.fields]
        assert "stages.1.teacher" in keys  # added because the error names it
        assert "teacher.pt does not exist" in field_error(form, "stages.1.teacher")
        assert form.fields[keys.index("stages.1.teacher")].label == "distill: teacher"
        field(form, "stages.1.teacher").value = str(tmp_path / "teacher.pt")
        await wait_for(pilot, lambda: field_error(form, "stages.1.teacher") == "", what="the teacher accepted")


@run_async
async def test_zero_epochs_and_errors_in_words(tmp_path):
    preset_with(tmp_path, "slim", stages=[{"type": "train"}, {"type": "finetune", "training": {"epochs": 2}}])
    app = HostApp(RunsScreen, tmp_path / "runs", [tmp_path / "presets"])
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_preset_form(pilot, app, "slim")
        field(form, "training.epochs").value = "0"
        await wait_for(pilot, lambda: "0 epochs trains nothing" in field_error(form, "training.epochs"), what="0")
        field(form, "training.epochs").value = "1"
        field(form, "stages.1.training.epochs").value = "0"
        await wait_for(pilot, lambda: "0 epochs trains nothing" in field_error(form, "stages.1.training.epochs"),
                       what="a stage's 0")
        field(form, "stages.1.training.epochs").value = "2"
        field(form, "model.arch").value = "6"  # text: a name, not the number 6
        await wait_for(pilot, lambda: "unknown model '6'" in field_error(form, "model.arch"), what="the arch")
        field(form, "model.arch").value = "vgg"
        field(form, "training.batch_size").value = "abc"
        await wait_for(pilot, lambda: "must be a whole number; got 'abc'" in field_error(form, "training.batch_size"),
                       what="words")
        assert "Input should" not in field_error(form, "training.batch_size")


@run_async
async def test_keys_in_a_burst_stay_in_the_field_they_were_typed_into(tmp_path):
    preset_with(tmp_path, "bad", training__lr=-1)
    runs_dir = tmp_path / "runs"
    app = HostApp(RunsScreen, runs_dir, [tmp_path / "presets"])
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_preset_form(pilot, app, "bad")
        name = field(form, "output.name")
        name.focus()
        name.cursor_position = len(name.value)
        await pilot.pause()
        for key in ("ctrl+s", "x", "y", "z"):  # launch, and go on typing before the answer comes
            app.post_message(events.Key(key, key if len(key) == 1 else None))
        await wait_for(pilot, lambda: "nothing was launched" in launch_errors(form), what="the refusal")
        for key in ("1", "2"):  # and after it
            app.post_message(events.Key(key, key))
        await wait_for(pilot, lambda: name.value == "badxyz12", what="the name typed")
        assert field(form, "training.lr").value == "-1" and form.focused is name
        app.post_message(events.Key("enter", None))  # enter: the next field, not a launch
        await wait_for(pilot, lambda: form.focused is field(form, "model.arch"), what="the next field")
        await settle_check(pilot, form)
        assert not runs_dir.exists() or not any(runs_dir.iterdir())
