"""`import engine` is cheap and the arrow goes tui -> engine only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ENGINE_MODULES = ["engine", "engine.config", "engine.models", "engine.data", "engine.runs", "engine.slim", "engine.distill"]


def modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_engine_imports_without_torch_or_textual():
    loaded = modules_after("; ".join(f"import {m}" for m in ENGINE_MODULES))
    assert "torch" not in loaded
    assert not any(m == "textual" or m.startswith("textual.") for m in loaded)
    assert not any(m.startswith("tui") for m in loaded)


def test_engine_sources_never_import_textual_or_tui():
    offenders = []
    for path in Path("engine").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import textual", "from textual", "import tui", "from tui")):
                offenders.append(f"{path}: {s}")
    assert offenders == []


def test_validating_a_preset_does_not_import_torch():
    loaded = modules_after("from engine.config import load_preset; load_preset('presets/demo.yaml')")
    assert "torch" not in loaded
