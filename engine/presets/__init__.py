"""The presets shipped inside the package (YAML files beside this module), found by name.

`slimlab --batch demo` and the workbench's new-run picker read them with importlib.resources,
so they are there in any install, not only in a checkout of the repository (whose top-level
`presets` is a link to this folder).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from engine.errors import PresetError

SUFFIXES = (".yaml", ".yml")


def folder() -> Path:
    """The folder holding the built-in presets (package data on the file system)."""
    return Path(str(resources.files(__name__)))


def paths() -> list[Path]:
    """Every built-in preset file, sorted by name."""
    return sorted(p for p in folder().iterdir() if p.suffix in SUFFIXES and p.is_file())


def names() -> list[str]:
    return [p.stem for p in paths()]


def builtin(name: str) -> Path | None:
    """The built-in preset called `name` (its file stem, with or without .yaml; - and _ alike)."""
    wanted = Path(name).stem if Path(name).suffix in SUFFIXES else name
    wanted = wanted.replace("-", "_")
    return next((p for p in paths() if p.stem.replace("-", "_") == wanted), None)


def locate(preset: str | Path) -> Path:
    """A preset argument as a file: an existing path as given, else a built-in preset's name."""
    path = Path(preset)
    if path.exists():
        return path
    found = builtin(str(preset)) if len(path.parts) == 1 else None
    if found is not None:
        return found
    raise PresetError(
        f"{preset}: no such preset file, and no built-in preset of that name; "
        f"built-in: {', '.join(names())} (e.g. slimlab --batch demo)"
    )
