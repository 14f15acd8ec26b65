"""Accuracy against pruning ratio (no finetune), with the inspector's current ratio marked."""

from __future__ import annotations

import math
from typing import Any

from textual_plotext import PlotextPlot


class SweepPlot(PlotextPlot):
    DEFAULT_CSS = """
    SweepPlot { height: 1fr; min-height: 6; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[dict[str, Any]] = []
        self.current: float | None = None
        self.source = ""

    def set_rows(self, rows: list[dict[str, Any]], source: str) -> None:
        self.rows, self.source = list(rows), source
        self.replot()

    def set_current(self, ratio: float | None) -> None:
        if ratio != self.current:
            self.current = ratio
            self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        rows = [r for r in self.rows if isinstance(r.get("accuracy"), (int, float))]
        if rows:
            xs = [100 * r["ratio"] for r in rows]
            ys = [100 * r["accuracy"] for r in rows]
            plt.plot(xs, ys, marker="braille", color="cyan")
            plt.scatter(xs, ys, marker="●", color="cyan")
            if self.current is not None and math.isfinite(self.current):
                plt.plot([100 * self.current] * 2, [0.0, 100.0], color="orange", marker="│")
            plt.ylim(0, 100)
            plt.xlim(0, 100)
            plt.yticks([0, 25, 50, 75, 100], ["0", "25", "50", "75", "100"])
        plt.xlabel("% channels removed")
        plt.title("accuracy % without finetuning")
        self.refresh()
