"""Plot widgets over textual-plotext that rebuild only when their data changed.

Building a plotext figure costs milliseconds; the screen's timer hands new series in at most a
few times a second and the last figure is cached per (size, data version, theme), so repaints
caused by anything else reuse it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from tui.widgets.axis import fmt_tick, nice_ticks
from tui.widgets.run_series import decimate

# plotext colour names and the same colours for the Rich legend line
COLORS = (("cyan+", "bright_cyan"), ("orange+", "orange1"), ("green+", "bright_green"),
          ("magenta+", "bright_magenta"), ("red+", "bright_red"), ("blue+", "bright_blue"),
          ("yellow+", "bright_yellow"), ("gray+", "grey70"))


def numeric_ticks(lo: float, hi: float, count: int) -> tuple[list[float], list[str]]:
    """Round tick values inside [lo, hi] and their labels (at least the two ends when none fit)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo], [f"{lo:.3g}"]
    count = max(1, count)
    values = nice_ticks(lo, hi, count)
    while len(values) < 2 and count < 12:  # a short axis: finer steps until two ticks fit
        count += 1
        values = nice_ticks(lo, hi, count)
    if len(values) < 2:
        return [lo, hi], [f"{lo:.3g}", f"{hi:.3g}"]
    step = values[1] - values[0]
    return values, [fmt_tick(v, step) if abs(step) >= 1e-3 else f"{v:.2g}" for v in values]


def plot_frame(plot: PlotextPlot, width: int, height: int) -> Text:
    """Build the plotext figure at `width` x `height` cells (the widget's own size is not used)."""
    plt = plot.plt
    plt.plotsize(width, height)
    plt._set_size(width, height)
    plt.theme(plot._get_plotext_theme_name(plot.app.theme))
    return Text.from_ansi(plt.build())


def legend_line(title: str, entries: Sequence[tuple[str, str]], width: int) -> Text:
    """The plot's title and its legend on one row above the plot, where no data is drawn."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(title, "bold")
    for label, colour in entries:
        text.append("  ")
        text.append("━━", colour)
        text.append(f" {label}")
    text.truncate(width, overflow="ellipsis")
    return text


@dataclass
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    marker: str = "braille"
    color: str | None = None


class MetricPlot(PlotextPlot):
    """One titled plotext figure of a few lines, with optional labelled vertical marks."""

    DEFAULT_CSS = """
    MetricPlot {
        width: 1fr;
        height: 1fr;
        min-height: 5;
    }
    """

    def __init__(
        self, title: str, xlabel: str = "", *, empty: str = "no data yet",
        id: str | None = None, classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.xlabel = xlabel
        self.empty = empty
        self._lines: list[Line] = []
        self._marks: list[tuple[float, str]] = []
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache: RenderResult = Text("")
        self.builds = 0  # how many figures were actually built (benchmarks read it)

    def show_lines(self, lines: Sequence[Line], marks: Sequence[tuple[float, str]] = (), title: str | None = None) -> None:
        self._lines = list(lines)
        self._marks = list(marks)
        if title is not None:
            self.title = title
        self._version += 1
        self.refresh()

    @property
    def has_data(self) -> bool:
        return any(line.xs for line in self._lines)

    def render(self) -> RenderResult:
        width, height = self.size
        key = (width, height, self._version, self.app.theme)
        if key == self._cache_key:
            return self._cache
        self._cache_key = key
        if not self.has_data or width < 20 or height < 5:
            self._cache = Text(f"{self.title}\n{self.empty}", style="dim", justify="center")
            return self._cache
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel(self.xlabel)
        # Braille gives 2 points per column; more than that is invisible and slow to build.
        limit = max(16, 2 * width)
        legend: list[tuple[str, str]] = []
        xs_all: list[float] = []
        ys_all: list[float] = []
        for i, line in enumerate(self._lines):
            if not line.xs:
                continue
            xs, ys = decimate(list(line.xs), list(line.ys), limit)
            colour, rich_colour = COLORS[i % len(COLORS)]
            plt.plot(xs, ys, marker=line.marker, color=line.color or colour)
            legend.append((line.label, rich_colour))
            xs_all += xs
            ys_all += ys
        for x, _name in self._marks[1:]:
            plt.vline(x, "gray")
        rows = height - 1 - (3 if self.xlabel else 2)  # legend row, x axis and labels
        y_lo, y_hi = min(ys_all), max(ys_all)
        if y_hi == y_lo:
            y_lo, y_hi = y_lo - 1, y_hi + 1
        plt.ylim(y_lo, y_hi)
        plt.yticks(*numeric_ticks(y_lo, y_hi, max(1, rows // 3)))
        x_lo, x_hi = min(xs_all), max(xs_all)
        plt.xticks(*numeric_ticks(x_lo, x_hi, max(1, width // 14)))
        self.builds += 1
        frame = plot_frame(self, width, height - 1)
        self._cache = Text("\n").join([legend_line(self.title, legend, width), frame])
        return self._cache
