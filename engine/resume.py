"""What a resumed run finds in its directory, and what it decides from it.

A stage is complete when its result is on disk: its output `weights/<stage>.pt` (written, in one
atomic rename, only when the stage's work is done) or its summary.json entry (written after the
output; the only record of a stage without an output model). status.json's `completed` follows
them, so a kill between a stage's output and status.json loses nothing: the next resume finds the
output and does not redo the stage. Everything here reads; the pipeline writes and logs what it
decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARTIAL_GLOB = ".*.tmp"  # engine/atomic.py's temporary files


@dataclass
class Found:
    """The state of a run directory at the start of a resume."""

    status: dict[str, Any] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    original: Path | None = None
    note: str | None = None  # why status.json could not be used as it was


def read_status(run: Path) -> Found:
    """status.json's stage bookkeeping; a missing or corrupt one is reported, not fatal
    (the stage records on disk say what is complete)."""
    path = run / "status.json"
    try:
        st = json.loads(path.read_text())
        if not isinstance(st, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return Found(note="status.json is missing")
    except (OSError, ValueError) as e:
        return Found(note=f"status.json is unreadable ({e})")
    try:
        completed = [str(s) for s in st.get("completed") or []]
        outputs = {str(k): Path(v) for k, v in (st.get("outputs") or {}).items()}
    except (TypeError, AttributeError, ValueError):
        return Found(status=st, note="status.json's stage lists are malformed")
    original = Path(st["original"]) if isinstance(st.get("original"), str) else None
    return Found(st, completed, outputs, original)


def summary_entry(run: Path, name: str) -> dict[str, Any] | None:
    """The figures of stage `name` in summary.json: written when the stage completed."""
    try:
        data = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(name) if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else None


def partial_files(run: Path) -> list[Path]:
    """Temporary files of writes that a killed process never finished."""
    return sorted([*run.glob(PARTIAL_GLOB), *(run / "weights").glob(PARTIAL_GLOB)])


def last_position(raw: Any) -> dict[str, Any] | None:
    """last.pt's position (stage, epoch, batch, step), if it has a usable one."""
    pos = raw.get("position") if isinstance(raw, dict) else None
    return pos if isinstance(pos, dict) and isinstance(pos.get("stage"), str) else None
