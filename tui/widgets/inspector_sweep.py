"""Accuracy against pruning ratio (no finetune), with the inspector's current ratio marked."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from tui.widgets.axis import percent_ticks
from tui.widgets.plots import legend_line, plot_frame


class SweepPlot(PlotextPlot):
    DEFAULT_CSS = """
    SweepPlot { height: 1fr; min-height: 6; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[dict[str, Any]] = []
        self.current: float | None = None
        self.source = ""
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache: Text = Text("")

    def set_rows(self, rows: list[dict[str, Any]], source: str) -> None:
        self.rows, self.source = list(rows), source
        self.replot()

    def set_current(self, ratio: float | None) -> None:
        if ratio != self.current:
            self.current = ratio
            self.replot()

    def replot(self) -> None:
        self._version += 1
        self.refresh()

    def render(self) -> RenderResult:
        width, height = self.size
        key = (width, height, self._version, self.app.theme)
        if key == self._cache_key:
            return self._cache
        self._cache_key = key
        title = "accuracy % without finetuning"
        rows = [r for r in self.rows if isinstance(r.get("accuracy"), (int, float))]
        if not rows or width < 20 or height < 6:
            self._cache = Text(f"{title}\n{'no sweep yet' if not rows else ''}", style="dim", justify="center")
            return self._cache
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        xs = [100 * r["ratio"] for r in rows]
        ys = [100 * r["accuracy"] for r in rows]
        plt.plot(xs, ys, marker="braille", color="cyan")
        plt.scatter(xs, ys, marker="●", color="cyan")
        entries = [("accuracy", "cyan")]
        if self.current is not None and math.isfinite(self.current):
            plt.plot([100 * self.current] * 2, [0.0, 100.0], color="orange", marker="│")
            entries.append((f"now {100 * self.current:.0f}% removed", "dark_orange"))
        plt.ylim(0, 100)
        plt.xlim(0, 100)
        ticks = percent_ticks(height - 4)
        plt.yticks(ticks, [f"{t:g}" for t in ticks])
        xt = [0.0, 25.0, 50.0, 75.0, 100.0] if width >= 40 else [0.0, 50.0, 100.0]
        plt.xticks(xt, [f"{t:g}" for t in xt])
        plt.xlabel("% channels removed")
        frame = plot_frame(self, width, height - 1)
        self._cache = Text("\n").join([legend_line(title, entries, width), frame])
        return self._cache
