"""New run: pick a preset, edit its key fields, validate with the engine's schema, launch.

The edits are applied as `--set`-style overrides and validated by `engine.config.spec_from_dict`,
the same path `slimlab --batch --set` takes, so the form accepts exactly what the CLI accepts and
shows the engine's own messages next to the fields. Nothing starts until the whole spec is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import ContentSwitcher, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from engine import config
from engine.errors import PresetError, SlimlabError
from tui import launcher

PRESET_SUFFIXES = (".yaml", ".yml")
AMP_CHOICES = ("none", "fp16", "bf16")
NAME_KEY = "output.name"
PICK_TITLE = "New run: pick a preset (Enter), or tab to type a preset file's path"


@dataclass
class PresetChoice:
    path: Path
    name: str
    description: str = ""
    data: dict[str, Any] | None = None
    error: str | None = None
    source: str = ""  # "built-in" or the folder/file it was found in


@dataclass
class FormField:
    key: str  # the override key, as `--set` spells it (stages.1.s)
    label: str
    value: str


def read_preset(path: Path, source: str = "") -> PresetChoice:
    """One preset file, read but not validated (an unreadable one carries its error)."""
    choice = PresetChoice(path, path.stem, source=source)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError("not a mapping of keys")
    except (OSError, ValueError, yaml.YAMLError) as e:
        choice.error = f"unreadable: {str(e).splitlines()[0]}"
        return choice
    data.setdefault("name", path.stem)
    choice.name = str(data["name"])
    desc = str(data.get("description") or "").strip()
    choice.description = desc.splitlines()[0] if desc else ""
    choice.data = data
    return choice


def find_presets(dirs: list[Path], builtin: bool = True) -> list[PresetChoice]:
    """Every preset file in `dirs`, then the built-in ones (each file once, by its real path)."""
    from engine import presets

    out: list[PresetChoice] = []
    seen: set[Path] = set()
    shipped = presets.folder().resolve()
    for d in [*dirs, *([shipped] if builtin else [])]:
        d = Path(d).expanduser()
        if not d.is_dir():
            continue
        for path in sorted(p for p in d.iterdir() if p.suffix in PRESET_SUFFIXES and p.is_file()):
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            source = "built-in" if real.parent == shipped else f"{path.parent.name}/{path.name}"
            out.append(read_preset(path, source))
    return out


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def form_fields(data: dict[str, Any]) -> list[FormField]:
    """The key fields of a preset: run name, model, data, training, and each stage's main numbers."""
    model, dataset, training = data.get("model") or {}, data.get("data") or {}, data.get("training") or {}
    defaults = {name: f.default for name, f in config.TrainingSpec.model_fields.items()}
    output = data.get("output") or {}
    fields = [
        FormField(NAME_KEY, "run name", str(output.get("name") or data.get("name") or "run")),
        FormField("model.arch", "model.arch", _show(model.get("arch", config.ModelSpec().arch))),
        FormField("data.dataset", "data.dataset", _show(dataset.get("dataset", config.DataSpec().dataset))),
    ]
    for key in ("epochs", "batch_size", "lr", "amp", "device"):
        fields.append(FormField(f"training.{key}", f"training.{key}", _show(training.get(key, defaults[key]))))
    for i, stage in enumerate(data.get("stages") or []):
        if not isinstance(stage, dict):
            continue
        title = stage.get("name") or stage.get("type")
        kind = stage.get("type")
        if kind == "sparse":
            fields.append(FormField(f"stages.{i}.s", f"{title}: s", _show(stage.get("s", 1e-4))))
        elif kind == "prune":
            key = "threshold" if stage.get("threshold") is not None and stage.get("percent") is None else "percent"
            fields.append(FormField(f"stages.{i}.{key}", f"{title}: {key}", _show(stage.get(key))))
        stage_epochs = (stage.get("training") or {}).get("epochs")
        if stage_epochs is not None:
            fields.append(FormField(f"stages.{i}.training.epochs", f"{title}: epochs", _show(stage_epochs)))
    return fields


@dataclass
class Checked:
    spec: config.RunSpec | None
    name: str
    field_errors: dict[str, str]
    other_errors: list[str]


def _error_key(key: str) -> str:
    """`stages[1].s` (how the engine reports) -> `stages.1.s` (how --set spells it)."""
    return re.sub(r"\[(\d+)\]", r".\1", key)


def check(choice: PresetChoice, values: dict[str, str], initial: dict[str, str] | None = None) -> Checked:
    """Validate the preset with the form's values applied; errors keyed by field.

    Only fields that differ from `initial` become overrides, so untouched preset values are
    validated exactly as written, not after a round trip through the form's text.
    """
    name = values.get(NAME_KEY, "").strip()
    field_errors: dict[str, str] = {}
    if not name or "/" in name or "\\" in name or name.startswith("."):
        field_errors[NAME_KEY] = "a run name is a plain directory name: not empty, no '/', not starting with '.'"
    initial = initial or {}
    overrides = [f"{k}={v}" for k, v in values.items() if k != NAME_KEY and initial.get(k) != v]
    source = choice.path.name
    try:
        spec = config.spec_from_dict(choice.data or {}, overrides, source=source, base_dir=choice.path.parent)
    except PresetError as e:
        other: list[str] = []
        keys = list(values)
        for line in str(e).splitlines():
            text = line.strip().removeprefix(f"{source}: ")
            if text == "invalid preset" or not text:
                continue
            m = re.match(r"^([\w.\[\]-]+): (.*)$", text)
            key = _error_key(m.group(1)) if m else None
            target = key if key in keys else next((k for k in keys if key and k.startswith(key + ".")), None)
            if target is not None and m is not None:
                field_errors[target] = (field_errors.get(target, "") + "; " if target in field_errors else "") + m.group(2)
            else:
                other.append(text)
        return Checked(None, name, field_errors, other)
    if field_errors:
        return Checked(None, name, field_errors, [])
    _anchor_paths(spec, choice.path.parent)
    spec.output.name = name  # spec.yaml re-runs under the name it was launched with
    return Checked(spec, name, {}, [])


def _anchor_paths(spec: config.RunSpec, base: Path) -> None:
    """Paths a preset gives relative to its own folder must still work from the run directory."""
    if spec.data.path is not None and not spec.data.path.is_absolute() and not spec.data.path.exists():
        if (base / spec.data.path).exists():
            spec.data.path = (base / spec.data.path).resolve()
    ckpt = spec.model.checkpoint
    if ckpt is not None and not ckpt.is_absolute() and not ckpt.exists() and (base / ckpt).exists():
        spec.model.checkpoint = (base / ckpt).resolve()


class LaunchScreen(ModalScreen[Path | None]):
    """Dismisses with the new run's directory, or None when closed without launching."""

    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen #launch-dialog {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    LaunchScreen #launch-title { height: 1; text-style: bold; }
    LaunchScreen #launch-steps { height: auto; }
    LaunchScreen #launch-pick { height: auto; }
    LaunchScreen #launch-presets { height: auto; max-height: 18; }
    LaunchScreen #launch-path-row { height: 1; margin-top: 1; }
    LaunchScreen #launch-form { height: auto; max-height: 20; }
    LaunchScreen .field-row { height: 1; }
    LaunchScreen .field-row Label { width: 22; padding: 0 1 0 0; }
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

    def __init__(self, presets_dirs: list[Path], runs_dir: Path) -> None:
        super().__init__()
        self.presets_dirs = [Path(d) for d in presets_dirs]
        self.runs_dir = Path(runs_dir)
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

    def on_mount(self) -> None:
        self._warm_up()
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
        # The schema's name checks import the model and data registries (torch among them):
        # load them while the user picks a preset, not on the first keystroke in the form.
        from engine import data, models

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
        rows = []
        for i, f in enumerate(self.fields):
            if f.key == "training.amp" and f.value in AMP_CHOICES:
                editor: Input | Select = Select([(c, c) for c in AMP_CHOICES], value=f.value, allow_blank=False,
                                                compact=True, id=f"field-{i}")
            else:
                editor = Input(f.value, compact=True, id=f"field-{i}")
            rows.append(Horizontal(Label(f.label), editor, classes="field-row"))
            rows.append(Static("", id=f"error-{i}", classes="field-error"))
        await form.mount_all(rows)
        self.choice = choice
        self.checked = None
        self.query_one("#launch-title", Label).update(
            f"New run from {choice.name}: edit, then Ctrl+S (or Enter) to launch, Esc to go back")
        self.query_one(ContentSwitcher).current = "launch-form"
        self._errors([])
        self.query_one("#field-0").focus()
        self.validate_form()  # a preset's own problems (a missing data path ...) show at once

    def values(self) -> dict[str, str]:
        out = {}
        for i, f in enumerate(self.fields):
            editor = self.query_one(f"#field-{i}")
            out[f.key] = str(editor.value) if isinstance(editor, Select | Input) else f.value
        return out

    def validate_form(self, launch: bool = False) -> None:
        """Check the form in a thread (the engine's name checks may import torch the first time)."""
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

    def _checked(self, seq: int, result: Checked, launch: bool, launched: launcher.Launched | None,
                 error: str | None) -> None:
        if launch:
            self._launching = False
        if launched is not None:
            self.notify(f"started {launched.path.name} (pid {launched.pid})", title="New run")
            self.dismiss(launched.path)
            return
        if seq != self._seq and not launch:
            return  # an older check: a newer one is on its way
        self.checked = result
        for i, f in enumerate(self.fields):
            box = self.query_one(f"#error-{i}", Static)
            message = result.field_errors.get(f.key)
            box.update(f"↑ {message}" if message else "")
            box.set_class(bool(message), "shown")
        self._errors(result.other_errors + ([error] if error else []))
        if launch and result.spec is None:
            bad = next((i for i, f in enumerate(self.fields) if f.key in result.field_errors), None)
            if bad is not None:
                self.query_one(f"#field-{bad}").focus()
            self.notify("fix the marked fields first; nothing was launched", severity="warning", title="New run")

    def _errors(self, lines: list[str]) -> None:
        box = self.query_one("#launch-errors", Static)
        box.update("\n".join(lines))
        box.set_class(bool(lines), "shown")

    # ------------------------------------------------------------ events and actions

    @on(Input.Changed)
    @on(Select.Changed)
    def _edited(self) -> None:
        self.validate_form()

    @on(Input.Submitted, "#launch-form Input")
    def _submitted(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        self.validate_form(launch=True)

    def action_back(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        if switcher.current == "launch-form":
            self.choice = None
            self.checked = None
            switcher.current = "launch-pick"
            self.query_one("#launch-title", Label).update(PICK_TITLE)
            self._errors([])
            self.query_one("#launch-presets" if self.presets else "#launch-path").focus()
        else:
            self.dismiss(None)
