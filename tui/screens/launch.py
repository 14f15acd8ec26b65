"""New run: pick a preset (or type its path), edit its key fields, validate, launch.

The form's logic (fields, overrides, the engine's checks and this machine's) is in
tui/launch_form.py; this screen holds the widgets. Nothing starts until the whole spec is
valid. Keys arriving in bursts (fast typing through tmux) stay in the field they were typed
into: Enter moves to the next field, only Ctrl+S (or Enter on the last field) launches, and
nothing moves the focus but the user (a refused launch names the fields to fix).
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from engine.errors import SlimlabError
from tui import launcher
from tui.launch_form import (
    NAME_KEY,
    Checked,
    FormField,
    PresetChoice,
    check,
    find_presets,
    form_fields,
    read_preset,
)

AMP_CHOICES = ("none", "fp16", "bf16")
PICK_TITLE = "New run: pick a preset (Enter), or tab to type a preset file's path"
FORM_KEYS = "Enter: next field · Ctrl+S: launch · Esc: back"


class LaunchScreen(ModalScreen[Path | None]):
    """Dismisses with the new run's directory, or None when closed without launching.

    `start`: open straight on this preset's form (a failed run's spec, to edit and relaunch).
    """

    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen #launch-dialog {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    LaunchScreen #launch-title { height: 1; text-style: bold; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    LaunchScreen #launch-steps { height: auto; }
    LaunchScreen #launch-pick { height: auto; }
    LaunchScreen #launch-presets { height: auto; max-height: 16; }
    LaunchScreen #launch-path-row { height: 1; margin-top: 1; }
    LaunchScreen #launch-form { height: auto; max-height: 16; }
    LaunchScreen .field-row { height: 1; }
    LaunchScreen .field-row Label { width: 27; padding: 0 1 0 0; text-wrap: nowrap; text-overflow: ellipsis; }
    LaunchScreen .field-row Input, LaunchScreen .field-row Select { width: 1fr; }
    LaunchScreen .field-error { color: $error; padding: 0 0 0 22; height: auto; display: none; }
    LaunchScreen .field-error.shown { display: block; }
    LaunchScreen #launch-errors { color: $error; height: auto; max-height: 6; display: none; }
    LaunchScreen #launch-errors.shown { display: block; }
    """

    BINDINGS = [
        Binding("ctrl+s", "launch", "Launch", id="launch.launch"),
        Binding("escape", "back", "Back", id="launch.back"),
    ]

    def __init__(self, presets_dirs: list[Path], runs_dir: Path, start: PresetChoice | None = None) -> None:
        super().__init__()
        self.presets_dirs = [Path(d) for d in presets_dirs]
        self.runs_dir = Path(runs_dir)
        self.start = start
        self.presets: list[PresetChoice] = []
        self.choice: PresetChoice | None = None
        self.fields: list[FormField] = []
        self.checked: Checked | None = None  # the latest validation shown
        self._seq = 0
        self._launching = False

    def compose(self) -> ComposeResult:
        with Vertical(id="launch-dialog"):
            yield Label(PICK_TITLE, id="launch-title")
            with ContentSwitcher(initial="launch-pick", id="launch-steps"):
                with Vertical(id="launch-pick"):
                    yield OptionList(id="launch-presets")
                    with Horizontal(id="launch-path-row", classes="field-row"):
                        yield Label("or a preset file")
                        yield Input(placeholder="path/to/preset.yaml (tab here, then Enter)", compact=True,
                                    id="launch-path")
                yield VerticalScroll(id="launch-form")
            yield Static("", id="launch-errors")
        yield Footer()

    async def on_mount(self) -> None:
        self._warm_up()
        if self.start is not None:
            await self.open_form(self.start)
            return
        self.presets = find_presets(self.presets_dirs)
        picker = self.query_one("#launch-presets", OptionList)
        for i, p in enumerate(self.presets):
            detail = p.error or p.description
            prompt = f"{escape(p.name)}  [dim]{escape(p.source)}[/]" + (f"\n  [dim]{escape(detail)}[/]" if detail else "")
            picker.add_option(Option(prompt, id=str(i), disabled=p.error is not None))
        if self.presets:
            picker.highlighted = 0
            picker.focus()
        else:
            self.query_one("#launch-path", Input).focus()

    @work(thread=True, exit_on_error=False, group="launch-warm-up")
    def _warm_up(self) -> None:
        # The schema's name checks and the device check import the registries and torch:
        # load them while the user picks a preset, not on the first keystroke in the form.
        from engine import data, models, train  # noqa: F401

        data.names()
        models.names()

    # ------------------------------------------------------------ steps

    @on(OptionList.OptionSelected, "#launch-presets")
    async def _picked(self, event: OptionList.OptionSelected) -> None:
        await self.open_form(self.presets[int(event.option.id or 0)])

    @on(Input.Submitted, "#launch-path")
    async def _typed(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            self._errors(["type the path of a preset file (.yaml), e.g. presets/demo.yaml"])
            return
        path = Path(text).expanduser()
        if not path.is_file():
            self._errors([f"{text}: no such file"])
            return
        choice = read_preset(path, str(path))
        if choice.error:
            self._errors([f"{text}: {choice.error}"])
            return
        await self.open_form(choice)

    async def open_form(self, choice: PresetChoice) -> None:
        self.choice = None  # no validation while the rows are swapped
        self.fields = form_fields(choice.data or {})
        form = self.query_one("#launch-form", VerticalScroll)
        await form.remove_children()
        await form.mount_all([w for i, f in enumerate(self.fields) for w in self._row(i, f)])
        self.choice = choice
        self.checked = None
        verb = "Edit the run" if choice.source.startswith("run ") else "New run from"
        self.query_one("#launch-title", Label).update(f"{verb} {choice.name}: {FORM_KEYS}")
        self.query_one(ContentSwitcher).current = "launch-form"
        self._errors([])
        self.query_one("#field-0").focus()
        self.validate_form()  # a preset's own problems (a missing data path ...) show at once

    def _row(self, i: int, f: FormField) -> list[Widget]:
        if f.key == "training.amp" and f.value in AMP_CHOICES:
            editor: Input | Select = Select([(c, c) for c in AMP_CHOICES], value=f.value, allow_blank=False,
                                            compact=True, id=f"field-{i}")
        else:
            editor = Input(f.value, compact=True, id=f"field-{i}")
        return [Horizontal(Label(f.label), editor, classes="field-row"),
                Static("", id=f"error-{i}", classes="field-error")]

    def values(self) -> dict[str, str]:
        out = {}
        for i, f in enumerate(self.fields):
            editor = self.query_one(f"#field-{i}")
            out[f.key] = str(editor.value) if isinstance(editor, Select | Input) else f.value
        return out

    def validate_form(self, launch: bool = False) -> None:
        """Check the form in a thread (the engine's checks may import torch the first time)."""
        if self.choice is None:
            return
        if launch:
            if self._launching:
                return  # one launch per request, however often Ctrl+S is pressed
            self._launching = True
        self._seq += 1
        initial = {f.key: f.value for f in self.fields}
        self._check(self._seq, self.choice, self.values(), initial, launch)

    @work(thread=True, exit_on_error=False, group="launch-check")
    def _check(self, seq: int, choice: PresetChoice, values: dict[str, str], initial: dict[str, str],
               launch: bool) -> None:
        try:
            result = check(choice, values, initial)
        except Exception as e:  # an engine bug must not leave the dialog waiting forever
            result = Checked(None, values.get(NAME_KEY, ""), {}, [f"could not validate: {type(e).__name__}: {e}"])
        launched: launcher.Launched | None = None
        error: str | None = None
        if launch and result.spec is not None:
            try:
                launched = launcher.launch(result.spec, self.runs_dir, result.name)
            except (OSError, SlimlabError) as e:
                error = f"could not launch: {e}"
        self.app.call_from_thread(self._checked, seq, result, launch, launched, error)

    async def _checked(self, seq: int, result: Checked, launch: bool, launched: launcher.Launched | None,
                       error: str | None) -> None:
        if launch:
            self._launching = False
        if launched is not None:
            self.notify(f"started {launched.path.name} (pid {launched.pid})", title="New run")
            self.dismiss(launched.path)
            return
        if seq != self._seq and not launch:
            return  # an older check: a newer one is on its way
        if self.choice is None:
            return  # the form was closed meanwhile
        if result.new_fields:  # an error names a key the form had no field for: add one to fix it in
            known = {f.key for f in self.fields}
            form = self.query_one("#launch-form", VerticalScroll)
            for f in result.new_fields:
                if f.key not in known:
                    self.fields.append(f)
                    await form.mount_all(self._row(len(self.fields) - 1, f))
        self.checked = result
        for i, f in enumerate(self.fields):
            box = self.query_one(f"#error-{i}", Static)
            message = result.field_errors.get(f.key)
            box.update(f"↑ {message}" if message else "")
            box.set_class(bool(message), "shown")
        refused: list[str] = []
        if launch and result.spec is None:
            # The focus stays where it is: keys typed since Ctrl+S (a burst through tmux) must not
            # land in another field. The message names the fields to fix instead.
            bad = [f.label for f in self.fields if f.key in result.field_errors]
            refused = [f"fix {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''} first; nothing was launched"
                       if bad else "nothing was launched"]
        self._errors(result.other_errors + ([error] if error else []) + refused)

    def _errors(self, lines: list[str]) -> None:
        box = self.query_one("#launch-errors", Static)
        box.update(escape("\n".join(lines)))
        box.set_class(bool(lines), "shown")

    # ------------------------------------------------------------ events and actions

    @on(Input.Changed)
    @on(Select.Changed)
    def _edited(self) -> None:
        self.validate_form()

    @on(Input.Submitted, "#launch-form Input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        last = f"field-{len(self.fields) - 1}"
        if event.input.id == last:
            self.action_launch()
        else:
            self.focus_next()

    def action_launch(self) -> None:
        self.validate_form(launch=True)

    def action_back(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        if switcher.current == "launch-form" and self.start is None:
            self.choice = None
            self.checked = None
            switcher.current = "launch-pick"
            self.query_one("#launch-title", Label).update(PICK_TITLE)
            self._errors([])
            self.query_one("#launch-presets" if self.presets else "#launch-path").focus()
        else:
            self.dismiss(None)
