"""What a watcher of one run directory reads on each tick: status, new metrics, new log lines."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import runs
from tui.widgets.run_series import is_epoch_record


def fmt_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_accuracy(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def fmt_map(status: dict[str, Any]) -> str:
    """A detection run's best mAP50-95 (status.json), in Ultralytics' 0..1 figures."""
    value = status.get("best_mAP50_95")
    return f"mAP {value:.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def raw_status(info: runs.RunInfo) -> dict[str, Any]:
    """The whole status.json of a readable run (stages, stage_index, completed ...), or {}."""
    if info.extra:
        return info.extra
    if info.state == "unreadable":
        return {}
    try:
        st = runs.read_json(info.path / "status.json")
    except (OSError, ValueError):
        return {}
    return st if isinstance(st, dict) else {}


def stage_position(status: dict[str, Any]) -> tuple[int, int] | None:
    """(1-based index of the current stage, number of stages), when status.json says."""
    stages, index = status.get("stages"), status.get("stage_index")
    if isinstance(stages, list) and stages and isinstance(index, int):
        return min(index + 1, len(stages)), len(stages)
    return None


def run_fraction(info: runs.RunInfo, status: dict[str, Any]) -> float:
    """How much of the whole run is done: completed stages plus the current stage's progress."""
    if info.state == "done":
        return 1.0
    stages, completed = status.get("stages"), status.get("completed")
    if not isinstance(stages, list) or not stages:
        return 0.0
    done = len(completed) if isinstance(completed, list) else 0
    # a cancelled or failed run stopped part way into its stage: that part counts too
    current = info.progress if done < len(stages) else 0.0
    return max(0.0, min(1.0, (done + current) / len(stages)))


class TextTail:
    """Incremental reader of a text file (log.txt): the last lines first, then what is appended."""

    def __init__(self, path: Path, first_lines: int = 10):
        self.path = path
        self.offset: int | None = None
        self.first_lines = first_lines
        self._partial = b""

    def read(self) -> list[str]:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return []
        if self.offset is None or size < self.offset:  # first read, or the file was replaced
            start = max(0, size - 8192)
            with open(self.path, "rb") as f:
                f.seek(start)
                chunk = f.read()
            self.offset = start + len(chunk)
            lines = chunk.split(b"\n")
            if start > 0:
                lines = lines[1:]  # a cut first line
            self._partial = lines.pop() if lines else b""
            return [ln.decode("utf-8", "replace") for ln in lines[-self.first_lines:]]
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = self._partial + f.read()
        self.offset = size
        lines = chunk.split(b"\n")
        self._partial = lines.pop()
        return [ln.decode("utf-8", "replace") for ln in lines]


def spec_stage_epochs(spec_path: Path) -> dict[str, int]:
    """Epochs of each training stage by name, from the run's resolved spec.yaml ({} if unreadable)."""
    try:
        data = yaml.safe_load(spec_path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    top = (data.get("training") or {}).get("epochs")
    out: dict[str, int] = {}
    seen: dict[str, int] = {}
    for stage in data.get("stages") or []:
        if not isinstance(stage, dict):
            continue
        kind = str(stage.get("type"))
        seen[kind] = seen.get(kind, 0) + 1
        # A resolved spec names every stage; a hand-written one gets the engine's default names.
        name = stage.get("name") or (kind if seen[kind] == 1 else f"{kind}-{seen[kind]}")
        epochs = (stage.get("training") or {}).get("epochs")
        if stage.get("type") in ("train", "sparse", "finetune", "distill"):
            value = epochs if isinstance(epochs, int) else top
            if isinstance(value, int):
                out[name] = value
    return out


def epochs_for(stage_epochs: dict[str, int], stage: str | None) -> int | None:
    """Stages repeated by `rounds` are named <stage>-rN; they share the base stage's epochs."""
    if stage is None:
        return None
    if stage in stage_epochs:
        return stage_epochs[stage]
    base = re.sub(r"-r\d+$", "", stage)
    return stage_epochs.get(base)


@dataclass
class Poll:
    """One tick's reading of a run directory."""

    info: runs.RunInfo
    status: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    bad_lines: int = 0
    stage_epochs: dict[str, int] | None = None  # read once per run, from spec.yaml
    rewritten: bool = False  # metrics.jsonl was rewritten by a resume: `records` is all of it


def epoch_line(rec: dict[str, Any], epochs: int | None) -> str | None:
    """A metrics epoch record as a log line like the headless run prints; None for step records.

    Epochs count from 1, as in "epoch 5/5" of the run's own output."""
    if not is_epoch_record(rec):
        return None
    t = rec.get("t")
    clock = time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, int | float) else "--:--:--"
    epoch = rec.get("epoch")
    n = f"{epoch + 1}/{epochs}" if isinstance(epoch, int) and epochs else (f"{epoch + 1}" if isinstance(epoch, int) else "?")
    parts = [f"{clock} [{rec.get('stage', '?')}] epoch {n}"]
    for key, fmt in (("loss", "{:.4f}"), ("val_loss", "{:.4f}")):
        if isinstance(rec.get(key), int | float):
            parts.append(f"{key} {fmt.format(rec[key])}")
    if isinstance(rec.get("accuracy"), int | float):
        parts.append(f"accuracy {100 * rec['accuracy']:.2f}%")
    for key, label in (("mAP50_95", "mAP50-95"), ("mAP50", "mAP50"), ("precision", "P"), ("recall", "R")):
        if isinstance(rec.get(key), int | float):  # a detection epoch, in Ultralytics' 0..1 figures
            parts.append(f"{label} {rec[key]:.4f}")
    if isinstance(rec.get("acc_pruned_at_target"), int | float):
        parts.append(f"pruned-at-target {100 * rec['acc_pruned_at_target']:.2f}%")
    if isinstance(rec.get("mAP50_95_pruned_at_target"), int | float):
        parts.append(f"pruned-at-target mAP50-95 {rec['mAP50_95_pruned_at_target']:.4f}")
    for key, label in (("kd_loss", "kd"), ("feat_loss", "feat")):
        if isinstance(rec.get(key), int | float):
            parts.append(f"{label} {rec[key]:.4f}")
    if isinstance(rec.get("s"), int | float):
        parts.append(f"s {rec['s']:.2g}")
    if isinstance(rec.get("gamma_rel_lt_1e-2"), int | float):  # relative to the initial gamma
        parts.append(f"|gamma|<1% init {100 * rec['gamma_rel_lt_1e-2']:.1f}%")
    elif isinstance(rec.get("gamma_lt_1e-2"), int | float):
        parts.append(f"|gamma|<0.01 {100 * rec['gamma_lt_1e-2']:.1f}%")
    if isinstance(rec.get("epoch_time"), int | float):
        parts.append(f"({rec['epoch_time']:.1f}s)")
    return "  ".join(parts)


def merge_by_clock(log_lines: list[str], epoch_lines: list[str]) -> list[str]:
    """log.txt lines and epoch lines in time order: both start with HH:MM:SS (stable for ties)."""
    tagged = [(line[:8], 0, i, line) for i, line in enumerate(log_lines)]
    tagged += [(line[:8], 1, i, line) for i, line in enumerate(epoch_lines)]
    return [line for *_, line in sorted(tagged)]
