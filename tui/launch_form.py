"""What the new-run form holds and checks, apart from its widgets.

The form's edits become `--set`-style overrides validated by `engine.config.spec_from_dict`,
the path `slimlab --batch --set` takes, so the engine's own messages land next to the fields.
On top of the schema the form checks what would make the run fail as soon as it starts: the
device must exist on this machine (and fp16 needs CUDA), and a training stage must train for at
least one epoch. Any key an error names gets a field, so every problem can be fixed in the form.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import config
from engine.errors import PresetError

PRESET_SUFFIXES = (".yaml", ".yml")
NAME_KEY = "output.name"
ZERO_EPOCHS = "0 epochs trains nothing: give 1 or more"


@dataclass
class PresetChoice:
    path: Path
    name: str
    description: str = ""
    data: dict[str, Any] | None = None
    error: str | None = None
    source: str = ""  # "built-in", the folder/file it was found in, or the run it was cloned from


@dataclass
class FormField:
    key: str  # the override key, as `--set` spells it (stages.1.s)
    label: str
    value: str


@dataclass
class Checked:
    spec: config.RunSpec | None
    name: str
    field_errors: dict[str, str]
    other_errors: list[str]
    new_fields: list[FormField] = field(default_factory=list)  # keys an error names that had no field


# ---------------------------------------------------------------- presets


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


def run_choice(run_dir: Path) -> PresetChoice:
    """A run's resolved spec.yaml as a preset to edit and launch again (clone and edit)."""
    choice = read_preset(run_dir / "spec.yaml", f"run {run_dir.name}")
    if choice.data is not None:
        choice.name = run_dir.name
        # launched again under the same name: the new directory gets -2, -3 ...
        choice.data["output"] = {**(choice.data.get("output") or {}), "name": run_dir.name}
    return choice


# ---------------------------------------------------------------- fields


def show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def value_at(data: dict[str, Any], key: str) -> Any:
    """The preset's value at a --set key (stages.1.s), or None."""
    return config.value_at(data, key.split("."))


def label_for(data: dict[str, Any], key: str) -> str:
    m = re.match(r"^stages\.(\d+)\.(.+)$", key)
    if not m:
        return key
    stage = value_at(data, f"stages.{m.group(1)}")
    title = (stage.get("name") or stage.get("type")) if isinstance(stage, dict) else None
    return f"{title or 'stage ' + m.group(1)}: {m.group(2)}"


def form_fields(data: dict[str, Any]) -> list[FormField]:
    """The key fields of a preset: run name, model, data, training, and each stage's main numbers."""
    model, dataset, training = data.get("model") or {}, data.get("data") or {}, data.get("training") or {}
    defaults = {name: f.default for name, f in config.TrainingSpec.model_fields.items()}
    output = data.get("output") or {}
    fields = [
        FormField(NAME_KEY, "run name", str(output.get("name") or data.get("name") or "run")),
        FormField("model.arch", "model.arch", show(model.get("arch", config.ModelSpec().arch))),
    ]
    if model.get("checkpoint"):
        fields.append(FormField("model.checkpoint", "model.checkpoint", show(model.get("checkpoint"))))
    ds = dataset.get("dataset", config.DataSpec().dataset)
    fields.append(FormField("data.dataset", "data.dataset", show(ds)))
    if ds != "shapes" or dataset.get("path"):  # the files such a dataset needs: a path to fix when missing
        fields.append(FormField("data.path", "data.path", show(dataset.get("path"))))
    for key in ("epochs", "batch_size", "lr", "amp", "device"):
        fields.append(FormField(f"training.{key}", f"training.{key}", show(training.get(key, defaults[key]))))
    for i, stage in enumerate(data.get("stages") or []):
        if not isinstance(stage, dict):
            continue
        kind = stage.get("type")
        if kind == "sparse":
            fields.append(FormField(f"stages.{i}.s", label_for(data, f"stages.{i}.s"), show(stage.get("s", 1e-4))))
        elif kind == "prune":
            key = "threshold" if stage.get("threshold") is not None and stage.get("percent") is None else "percent"
            fields.append(FormField(f"stages.{i}.{key}", label_for(data, f"stages.{i}.{key}"), show(stage.get(key))))
        stage_epochs = (stage.get("training") or {}).get("epochs")
        if stage_epochs is not None:
            fields.append(FormField(f"stages.{i}.training.epochs", label_for(data, f"stages.{i}.training.epochs"),
                                    show(stage_epochs)))
    return fields


def is_text_field(data: dict[str, Any], key: str) -> bool:
    """Whether the schema keeps `key` as text (a name, a path), so `6` typed there stays "6"."""
    parts = key.split(".")
    cls: Any = config.RunSpec
    i = 0
    while i < len(parts):
        if not (isinstance(cls, type) and issubclass(cls, config.BaseModel)) or parts[i] not in cls.model_fields:
            return False
        if parts[i] == "stages" and cls is config.RunSpec:
            stage = value_at(data, ".".join(parts[: i + 2]))
            kind = stage.get("type") if isinstance(stage, dict) else None
            cls = next((c for c in _stage_classes() if c.model_fields["type"].annotation.__args__ == (kind,)), None)
            i += 2
            continue
        ann = cls.model_fields[parts[i]].annotation
        if i == len(parts) - 1:
            args = set(getattr(ann, "__args__", ()) or (ann,))
            return bool(args & {str, Path}) and not args & {int, float, bool}
        cls = _model_in(ann)
        i += 1
    return False


def _stage_classes() -> list[type]:
    """Every stage class of the schema, read from its `Stage` union (new stages included)."""
    union = typing.get_args(config.Stage)[0]
    return list(typing.get_args(union))


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, config.BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def override(data: dict[str, Any], key: str, text: str) -> str:
    """A field's text as a --set item; text fields are quoted so YAML keeps them text."""
    if is_text_field(data, key) and text.strip():
        return f"{key}={json.dumps(text.strip())}"
    return f"{key}={text}"


# ---------------------------------------------------------------- checking


def error_key(key: str) -> str:
    """`stages[1].s` (how the engine reports) -> `stages.1.s` (how --set spells it)."""
    return re.sub(r"\[(\d+)\]", r".\1", key)


def check(choice: PresetChoice, values: dict[str, str], initial: dict[str, str] | None = None,
          runtime: bool = True) -> Checked:
    """Validate the preset with the form's values applied; errors keyed by field.

    Only fields that differ from `initial` become overrides, so untouched preset values are
    validated exactly as written, not after a round trip through the form's text. `runtime`
    adds the checks against this machine (device, amp).
    """
    data = choice.data or {}
    name = values.get(NAME_KEY, "").strip()
    field_errors: dict[str, str] = {}
    if not name or "/" in name or "\\" in name or name.startswith("."):
        field_errors[NAME_KEY] = "a run name is a plain directory name: not empty, no '/', not starting with '.'"
    initial = initial or {}
    overrides = [override(data, k, v) for k, v in values.items() if k != NAME_KEY and initial.get(k) != v]
    source = choice.path.name
    try:
        spec = config.spec_from_dict(data, overrides, source=source, base_dir=choice.path.parent)
    except PresetError as e:
        other: list[str] = []
        new_fields: list[FormField] = []
        keys = list(values)
        for line in str(e).splitlines():
            text = line.strip().removeprefix(f"{source}: ")
            if text == "invalid preset" or not text:
                continue
            m = re.match(r"^([\w.\[\]-]+): (.*)$", text)
            key = error_key(m.group(1)) if m else None
            target = key if key in keys else next((k for k in keys if key and k.startswith(key + ".")), None)
            if target is None and key is not None and m is not None and _settable(data, key):
                target = key  # no field for it yet: the form adds one
                new_fields.append(FormField(key, label_for(data, key), show(value_at(data, key))))
                keys.append(key)
            if target is not None and m is not None:
                field_errors[target] = (field_errors.get(target, "") + "; " if target in field_errors else "") + m.group(2)
            else:
                other.append(text)
        return Checked(None, name, field_errors, other, new_fields)
    field_errors.update(epoch_errors(spec, values))
    if runtime:
        field_errors.update(machine_errors(spec, values))
    if field_errors:
        return Checked(None, name, field_errors, [])
    anchor_paths(spec, choice.path.parent)
    spec.output.name = name  # spec.yaml re-runs under the name it was launched with
    return Checked(spec, name, {}, [])


def _settable(data: dict[str, Any], key: str) -> bool:
    """Keys a field can set: a leaf of the spec (not a whole section or the top level)."""
    value = value_at(data, key)
    return not isinstance(value, dict | list) and key.split(".")[0] in ("model", "data", "training", "stages", "output")


def epoch_errors(spec: config.RunSpec, values: dict[str, str]) -> dict[str, str]:
    """A training stage with 0 epochs would pass its model through untrained: refused here."""
    out: dict[str, str] = {}
    for i, stage in enumerate(spec.stages):
        if stage.type not in config.TRAINING_STAGES or spec.training_for(stage).epochs >= 1:
            continue
        key = f"stages.{i}.training.epochs"
        out[key if key in values else "training.epochs"] = ZERO_EPOCHS
    return out


def machine_errors(spec: config.RunSpec, values: dict[str, str]) -> dict[str, str]:
    """What this machine cannot run: the engine's own device and amp checks, before launching."""
    from engine.train import amp_dtype, resolve_device

    out: dict[str, str] = {}
    try:
        device = resolve_device(spec.training.device)
    except PresetError as e:
        out["training.device"] = str(e).removeprefix("training.device: ")
        return out
    for i, stage in enumerate(spec.stages):
        if stage.type not in config.TRAINING_STAGES:
            continue
        try:
            amp_dtype(spec.training_for(stage), device)
        except PresetError as e:
            key = f"stages.{i}.training.amp"
            out[key if key in values else "training.amp"] = str(e).removeprefix("training.amp: ")
    return out


def anchor_paths(spec: config.RunSpec, base: Path) -> None:
    """Paths a preset gives relative to its own folder must still work from the run directory."""
    if spec.data.path is not None and not spec.data.path.is_absolute() and not spec.data.path.exists():
        if (base / spec.data.path).exists():
            spec.data.path = (base / spec.data.path).resolve()
    ckpt = spec.model.checkpoint
    if ckpt is not None and not ckpt.is_absolute() and not ckpt.exists() and (base / ckpt).exists():
        spec.model.checkpoint = (base / ckpt).resolve()
