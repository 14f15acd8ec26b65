"""Plot widgets over textual-plotext that rebuild only when their data changed.

Building a plotext figure costs milliseconds; the screen's timer hands new series in at most a
few times a second and the last figure is cached per (size, data version, theme), so repaints
caused by anything else reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from tui.widgets.run_series import decimate

COLORS = ("cyan+", "orange+", "green+", "magenta+", "red+", "blue+", "yellow+", "gray+")


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
        if not self.has_data or width < 10 or height < 4:
            self._cache = Text(f"{self.title}\n{self.empty}", style="dim", justify="center")
            return self._cache
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        plt.xlabel(self.xlabel)
        # Braille gives 2 points per column; more than that is invisible and slow to build.
        limit = max(16, 2 * width)
        for i, line in enumerate(self._lines):
            if not line.xs:
                continue
            xs, ys = decimate(list(line.xs), list(line.ys), limit)
            plt.plot(xs, ys, label=line.label, marker=line.marker, color=line.color or COLORS[i % len(COLORS)])
        for x, _name in self._marks[1:]:
            plt.vline(x, "gray")
        self.builds += 1
        self._cache = super().render()
        return self._cache
