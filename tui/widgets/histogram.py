"""|gamma| histogram with the pruning threshold marked: bins below it are cut, the rest kept.

Bin counts are computed once with numpy when the data is set; a threshold move only redraws
the plot, so it stays cheap for 100k channels.
"""

from __future__ import annotations

import math

import numpy as np
from textual_plotext import PlotextPlot

BINS = 48
CUT_COLOUR = "red"
KEPT_COLOUR = "green"
LINE_COLOUR = "orange"


def fmt_gamma(value: float | None) -> str:
    """A |gamma| value, short: 0.0123, 1.2e-05, 0."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.2e}"


class GammaHistogram(PlotextPlot):
    """Histogram of |gamma| values; `log` switches the counts axis to a log scale."""

    DEFAULT_CSS = """
    GammaHistogram { height: 1fr; min-height: 6; }
    """

    def __init__(self, *, title: str = "|gamma|", id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.log_scale = False
        self.threshold: float | None = None
        self._counts = np.zeros(0, dtype=np.int64)
        self._edges = np.zeros(0)
        self._values = 0

    @property
    def counts(self) -> np.ndarray:
        return self._counts

    def set_values(self, values: np.ndarray) -> None:
        """Bin `values` (finite ones only); the range starts at 0 so small gammas sit at the left edge."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        self._values = int(v.size)
        if v.size:
            hi = float(v.max())
            hi = hi if hi > 0 else 1.0
            bins = int(min(BINS, max(8, 2 * np.sqrt(v.size))))  # few channels: fewer, wider bins
            self._counts, self._edges = np.histogram(v, bins=bins, range=(0.0, hi))
        else:
            self._counts, self._edges = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.replot()

    def set_threshold(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.replot()

    def set_log(self, log: bool) -> None:
        self.log_scale = log
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        scale = "log" if self.log_scale else "linear"
        if not self._counts.size:
            plt.title(f"{self.title}: no values")
            self.refresh()
            return
        centers = (self._edges[:-1] + self._edges[1:]) / 2
        heights = np.log10(self._counts + 1.0) if self.log_scale else self._counts.astype(np.float64)
        thr = self.threshold
        cut = centers < thr if thr is not None and math.isfinite(thr) else np.zeros(centers.size, bool)
        if cut.any():
            plt.bar(centers[cut].tolist(), heights[cut].tolist(), width=0.9, color=CUT_COLOUR)
        if (~cut).any():
            plt.bar(centers[~cut].tolist(), heights[~cut].tolist(), width=0.9, color=KEPT_COLOUR)
        top = float(heights.max()) if heights.size else 1.0
        if thr is not None and math.isfinite(thr) and thr <= self._edges[-1]:
            plt.plot([thr, thr], [0.0, top or 1.0], color=LINE_COLOUR, marker="│")
        ticks = np.linspace(self._edges[0], self._edges[-1], 5)
        plt.xticks(ticks.tolist(), [fmt_gamma(float(t)) for t in ticks])
        if self.log_scale:
            powers = np.arange(0, int(math.ceil(top)) + 1)
            plt.yticks(np.log10(10.0**powers + 1).tolist(), [f"{10**int(k):g}" for k in powers])
        else:
            counts = np.unique(np.round(np.linspace(0, top, 5)).astype(np.int64))
            plt.yticks(counts.tolist(), [str(int(c)) for c in counts])
        marker = f"threshold {fmt_gamma(thr)}" if thr is not None else "no threshold"
        plt.title(f"{self.title}: {self._values} channels, {scale} counts, {marker}, red = cut")
        self.refresh()
