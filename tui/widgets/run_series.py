"""In-memory series built from a run's metrics lines, fed incrementally as lines arrive.

The x axis of step plots is a run-wide step: each training stage restarts its own step
count, so a stage's steps are shifted past the end of the stage before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MEMORY_KEYS = ("mem_allocated", "mem_reserved", "mem_peak", "rss")
# Relative to each layer's initial gamma (the same meaning for every model) when the run logs
# them; the absolute fractions for runs (and detection stages) that log only those.
GAMMA_KEYS = ("gamma_rel_lt_1e-2", "gamma_rel_lt_1e-3", "gamma_lt_1e-2", "gamma_lt_1e-3")
# Detection runs: Ultralytics' loss parts per step and mAP per epoch (slimlab's metrics names).
LOSS_PARTS = {"box_loss": "box", "obj_loss": "obj", "cls_loss": "cls", "dfl_loss": "dfl", "kd_loss": "kd", "feat_loss": "feat"}  # short: the legend fits 80 columns
MAP_KEYS = {"mAP50_95": "mAP50-95 %", "mAP50": "mAP50 %", "mAP50_95_pruned_at_target": "pruned at target %"}
EPOCH_KEYS = ("accuracy", "val_loss", "mAP50_95")  # a metrics line with one of these ends an epoch
GAMMA_LABELS = {
    "gamma_rel_lt_1e-2": "|gamma| < 1% of initial %",
    "gamma_rel_lt_1e-3": "|gamma| < 0.1% of initial %",
    "gamma_lt_1e-2": "|gamma| < 1e-2 %",
    "gamma_lt_1e-3": "|gamma| < 1e-3 %",
}


def is_epoch_record(rec: dict[str, Any]) -> bool:
    """An epoch's evaluation line (classifier or detector), not a training step's."""
    return any(key in rec for key in EPOCH_KEYS)


@dataclass
class Series:
    label: str
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    def add(self, x: float, y: Any) -> bool:
        if isinstance(y, bool) or not isinstance(y, int | float) or not math.isfinite(y):
            return False  # NaN/inf would break the plot's axis range
        self.xs.append(float(x))
        self.ys.append(float(y))
        return True


@dataclass
class RunSeries:
    """Everything the monitor plots; `versions` counts changes per plot so only those redraw."""

    loss: Series = field(default_factory=lambda: Series("train loss"))
    val_loss: Series = field(default_factory=lambda: Series("val loss"))
    accuracy: Series = field(default_factory=lambda: Series("val accuracy %"))
    pruned: Series = field(default_factory=lambda: Series("pruned at target %"))  # acc_pruned_at_target
    lr: Series = field(default_factory=lambda: Series("lr"))
    loss_parts: dict[str, Series] = field(default_factory=dict)  # detection: box / cls / dfl
    map: dict[str, Series] = field(default_factory=dict)  # detection: mAP50-95 and mAP50, in %
    memory: dict[str, Series] = field(default_factory=dict)
    gamma: dict[str, Series] = field(default_factory=dict)
    stage_marks: list[tuple[float, str]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("loss", "accuracy", "lr", "memory", "gamma"), 0))
    stage: str | None = None
    epoch: int | None = None  # the latest epoch seen in the current stage (0-based)
    epochs_done: int = 0  # completed epochs over the whole run
    lines: int = 0
    _offset: float = 0.0
    _last_x: float = 0.0

    def feed(self, records: list[dict[str, Any]]) -> bool:
        """Add metrics lines; True when any plot changed."""
        changed: set[str] = set()
        for rec in records:
            self._one(rec, changed)
        for name in changed:
            self.versions[name] += 1
        self.lines += len(records)
        return bool(changed)

    def _one(self, rec: dict[str, Any], changed: set[str]) -> None:
        stage = rec.get("stage")
        if stage != self.stage:
            if self.stage is not None:
                self._offset = self._last_x
            self.stage = stage
            self.stage_marks.append((self._offset, str(stage)))
            changed.add("loss")
        step = rec.get("step")
        x = self._offset + (step if isinstance(step, int | float) else 0)
        self._last_x = max(self._last_x, x)
        if isinstance(rec.get("epoch"), int):
            self.epoch = rec["epoch"]
        if is_epoch_record(rec):
            self.epochs_done += 1
            if self.val_loss.add(x, rec.get("val_loss")):
                changed.add("loss")
            if isinstance(rec.get("accuracy"), int | float) and self.accuracy.add(x, 100.0 * rec["accuracy"]):
                changed.add("accuracy")
            if isinstance(rec.get("acc_pruned_at_target"), int | float) and self.pruned.add(
                x, 100.0 * rec["acc_pruned_at_target"]
            ):
                changed.add("accuracy")
            for key, label in MAP_KEYS.items():
                value = rec.get(key)
                if isinstance(value, int | float) and self.map.setdefault(key, Series(label)).add(x, 100.0 * value):
                    changed.add("accuracy")
            relative = "gamma_rel_lt_1e-2" in rec
            for key in GAMMA_KEYS[:2] if relative else GAMMA_KEYS[2:]:
                if key in rec and self.gamma.setdefault(key, Series(GAMMA_LABELS[key])).add(
                    self.epochs_done, 100.0 * rec[key] if isinstance(rec[key], int | float) else None
                ):
                    changed.add("gamma")
        else:
            if self.loss.add(x, rec.get("loss")):
                changed.add("loss")
            if self.lr.add(x, rec.get("lr")):
                changed.add("lr")
            for key, label in LOSS_PARTS.items():
                if key in rec and self.loss_parts.setdefault(key, Series(label)).add(x, rec[key]):
                    changed.add("loss")
        # CUDA figures win over RSS: a GPU run's host memory is not the interesting number.
        keys = [k for k in MEMORY_KEYS[:3] if k in rec] or [k for k in MEMORY_KEYS[3:] if k in rec]
        for key in keys:
            if self.memory.setdefault(key, Series(f"{key} MiB")).add(x, rec[key]):
                changed.add("memory")


def decimate(xs: list[float], ys: list[float], limit: int) -> tuple[list[float], list[float]]:
    """At most `limit` points, evenly strided, keeping the last one (plotext is slow on long lists)."""
    n = len(xs)
    if n <= limit or limit < 2:
        return xs, ys
    stride = -(-n // (limit - 1))
    out_x, out_y = xs[::stride], ys[::stride]
    if (n - 1) % stride:
        out_x, out_y = out_x + [xs[-1]], out_y + [ys[-1]]
    return out_x, out_y
