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


def started_world_size(found: Found) -> int:
    """How many processes (torchrun's world size) the run was started with; 1 for older runs."""
    size = found.status.get("world_size", 1)
    return size if isinstance(size, int) and size >= 1 else 1


def world_size_refusal(run: Path, found: Found, world: int, command: str) -> str | None:
    """Why a resume with `world` processes must not continue this run, or None.

    The batches each process sees, the BatchNorm statistics and the resume position inside an
    epoch all depend on the world size: continuing with another one silently changes results."""
    started = started_world_size(found)
    if started == world or found.status.get("state") == "done" or not (found.completed or found.status.get("stage")):
        return None
    how = (f"torchrun --nproc_per_node {started} -m engine --batch --resume {run}" if started > 1
           else f"slimlab --batch --resume {run} (one process, not under torchrun)")
    return (f"{run} was started with {_processes(started)} and this resume has {_processes(world)}: its batches, "
            f"BatchNorm statistics and resume position depend on that, so the results would change. Resume with: "
            f"{how}; or accept the change: {command} --world-size-change")


def _processes(n: int) -> str:
    return f"{n} processes (torchrun --nproc_per_node {n})" if n > 1 else "1 process"


# ---------------------------------------------------------------- --resume RUN --set KEY=VALUE

# Training settings the saved state does not depend on: a resume may change them at any time.
SAFE_TRAINING = ("epochs", "lr", "clip_norm", "warmup_epochs", "schedule", "step_milestones", "step_gamma",
                 "momentum", "weight_decay", "amp", "log_every", "device", "threads")
# Keys of a stage in progress (its last.pt exists) that change nothing saved in last.pt.
SAFE_IN_PROGRESS = ("teacher", "kd", "s", "decay", "exclude", "select", "early_stop")
FIXED_STAGE_KEYS = ("type", "name", "start", "model")


@dataclass
class Saved:
    """What a run has saved so far, which decides what --set may still change."""

    completed: set[str]
    in_progress: str | None  # the stage weights/last.pt belongs to

    @property
    def anything(self) -> bool:
        return bool(self.completed or self.in_progress)


def saved_state(run: Path, stages: list[Any]) -> Saved:
    found = read_status(run)
    completed = set(found.completed)
    for stage in stages:  # status.json may lag behind the outputs (a kill between them)
        if (run / "weights" / f"{stage.name}.pt").exists() or summary_entry(run, stage.name) is not None:
            completed.add(stage.name)
    in_progress = None
    last = run / "weights" / "last.pt"
    if last.exists():
        from engine import checkpoint
        from engine.errors import CheckpointError

        try:
            pos = last_position(checkpoint.read_raw(last))
        except CheckpointError:
            pos = None
        in_progress = pos["stage"] if pos else None
    return Saved(completed, in_progress)


def check_resume_setting(parts: list[str], spec: Any, expanded: list[Any], saved: Saved) -> str | None:
    """None when `--set parts=...` is safe on a resume of this run, else why not (and what to do)."""
    key = ".".join(parts)
    top = parts[0]
    if top == "training":
        if len(parts) == 2 and parts[1] in SAFE_TRAINING:
            return None
        if not saved.anything:
            return None
        return (f"{key} cannot change on a resume: the saved state depends on it (safe: "
                f"{', '.join('training.' + k for k in SAFE_TRAINING)}); start a new run to change it")
    if top in ("model", "data"):
        if not saved.anything:
            return None
        return f"{key} cannot change on a resume: completed stages or weights/last.pt were made with it; start a new run"
    if top == "stages" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) < len(spec.stages):
        stage = spec.stages[int(parts[1])]
        instances = [s.name for s in expanded if s.name == stage.name or s.name.startswith(f"{stage.name}-r")]
        if parts[2] in FIXED_STAGE_KEYS:
            return f"{key}: a stage's {', '.join(FIXED_STAGE_KEYS)} cannot change on a resume"
        if instances and all(n in saved.completed for n in instances):
            return f"{key}: stage {stage.name} is done and a resume never runs it again; start a new run to change it"
        started = saved.in_progress in instances or any(n in saved.completed for n in instances)
        if not started:
            return None
        if parts[2] == "training" and len(parts) == 4 and parts[3] in SAFE_TRAINING:
            return None
        if parts[2] in SAFE_IN_PROGRESS:
            return None
        return (f"{key}: stage {stage.name} is in progress and weights/last.pt depends on it (safe now: "
                f"{', '.join(SAFE_IN_PROGRESS)}, training.<{'|'.join(SAFE_TRAINING)}>)")
    return f"{key} cannot change on a resume (it names the run or its stage list); start a new run to change it"
