"""Which epoch a training stage outputs, and when it stops early.

`best` keeps the epoch with the highest selection metric (val `accuracy`, or `acc_pruned_at_target`
for a sparse stage that has a target, where ties go to the later, sparser epoch); `last` keeps the
final epoch. Early stopping ends a stage once the metric has not risen by more than `min_delta`
for `patience` epochs; the metric is the selection metric whatever the mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Selection:
    mode: str = "best"  # best | last
    metric: str = "accuracy"
    later_on_tie: bool = False
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("best", "last"):
            raise ValueError(f"select {self.mode!r}: use best or last")

    def improves(self, metrics: dict[str, Any], best: dict[str, Any]) -> bool:
        """True when `metrics` (this epoch) replaces `best` as the stage's output."""
        if not best or self.mode == "last":
            return True
        value, held = metrics.get(self.metric), best.get(self.metric)
        if value is None:
            return False
        if held is None:
            return True
        return value > held or (self.later_on_tie and value == held)

    def peak(self, metrics: dict[str, Any], peak: dict[str, Any]) -> dict[str, Any]:
        """The epoch early stopping counts from: the last one that raised the metric by > min_delta."""
        value = metrics.get(self.metric)
        if value is None:
            return peak
        if not peak or value > peak[self.metric] + self.min_delta:
            return {"epoch": metrics["epoch"], self.metric: value}
        return peak

    def should_stop(self, completed: int, peak: dict[str, Any]) -> bool:
        """After `completed` epochs: has the metric been flat for `patience` epochs?"""
        if self.patience is None or not peak:
            return False
        return completed - 1 - int(peak["epoch"]) >= self.patience

    def describe(self) -> str:
        if self.mode == "last":
            return "the last epoch"
        return f"the epoch with the best {self.metric}"
