"""|gamma| histogram drawn cell by cell: every bar is wholly on one side of the threshold.

The threshold always falls on a column boundary: the bin it lands in is split into a cut bar
and a kept bar, so red means cut and green means kept, exactly. When the plan cuts channels the
global threshold alone would keep (a layer override, a min_keep floor) a bar is stacked: its cut
part (red) below its kept part (green). Bars are eighth-block characters, so small counts stay
visible; the x axis is linear or logarithmic (sparse-trained models keep most channels near 0,
where only a log axis spreads them out); the legend sits in the title row, never on the bars.

Binning is a `searchsorted` of the bin edges into values sorted once, so a threshold move costs
microseconds even for 100k channels, and the drawn frame is cached per size and data version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from tui.widgets.axis import fmt_decade, fmt_tick, nice_ticks, nice_top

CUT_COLOUR = "red"
KEPT_COLOUR = "green"
LINE_COLOUR = "dark_orange"
BLOCKS = " ▁▂▃▄▅▆▇█"  # 0..8 eighths of a cell, from the bottom
SPARSE_SHARE = 0.25  # log x by default when this share of the channels is below max / 50
LOG_SPAN = 1e-6  # a log axis shows at most 6 decades below the largest value


def fmt_gamma(value: float | None) -> str:
    """A |gamma| value, short: 0.0123, 1.2e-05, 0."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.2e}"


def is_sparse(sorted_values: np.ndarray) -> bool:
    """Most mass near zero (as after sparse training): a linear axis crams it into one column."""
    if sorted_values.size < 8 or sorted_values[-1] <= 0:
        return False
    small = np.searchsorted(sorted_values, sorted_values[-1] / 50.0, side="left")
    return small / sorted_values.size >= SPARSE_SHARE


@dataclass
class Bins:
    """One frame's binning: column span, value edges and counts of each bar."""

    columns: np.ndarray  # (k + 1,) column boundaries, 0 .. width
    edges: np.ndarray  # (k + 1,) value edges; the first is -inf and the last +inf (nothing falls out)
    total: np.ndarray  # (k,) channels in each bar
    cut: np.ndarray  # (k,) of those, channels the plan cuts
    threshold_col: int | None  # the column boundary the threshold sits on
    lo: float  # the value at column 0 (0, or the lowest decade on a log axis)
    hi: float  # the value at the last column boundary
    log_x: bool


def axis_range(values: np.ndarray, log_x: bool) -> tuple[float, float]:
    """The x range from the data alone, so it never moves with the threshold."""
    hi = float(values[-1]) if values.size and values[-1] > 0 else 1.0
    if not log_x:
        return 0.0, hi
    positive = values[values > 0]
    low = max(float(positive[0]) if positive.size else hi * LOG_SPAN, hi * LOG_SPAN)
    lo = 10.0 ** math.floor(math.log10(low))
    return lo, max(hi, lo * 10)


def make_bins(values: np.ndarray, cut_values: np.ndarray, threshold: float | None, width: int,
              log_x: bool, bars: int) -> Bins:
    """Bars over `width` columns for ascending `values`; `cut_values` (ascending) are the cut ones."""
    lo, hi = axis_range(values, log_x)
    bars = max(1, min(bars, width))
    columns = np.unique(np.round(np.linspace(0, width, bars + 1)).astype(np.int64))
    to_x = (lambda c: lo * (hi / lo) ** (c / width)) if log_x else (lambda c: lo + (hi - lo) * c / width)
    threshold_col: int | None = None
    if threshold is not None and math.isfinite(threshold):
        if log_x:  # below the axis (or 0): column 0, where the first bar holds everything below lo
            pos = math.log(threshold / lo) / math.log(hi / lo) * width if threshold > lo else 0.0
        else:
            pos = (threshold - lo) / (hi - lo) * width
        threshold_col = int(min(max(round(pos), 0), width))
        # a side with channels gets at least one column, so its colour shows
        if threshold_col == 0 and values.size and values[0] < threshold:
            threshold_col = 1
        if threshold_col == width and values.size and values[-1] >= threshold and width > 1:
            threshold_col = width - 1
        columns = np.union1d(columns, [threshold_col])
    edges = to_x(columns.astype(np.float64))
    if threshold_col is not None:
        edges[np.searchsorted(columns, threshold_col)] = threshold  # exactly: nothing straddles it
    edges[0], edges[-1] = -np.inf, np.inf
    total = np.diff(np.searchsorted(values, edges, side="left"))
    cut = np.diff(np.searchsorted(cut_values, edges, side="left"))
    return Bins(columns, edges, total, cut, threshold_col, lo, hi, log_x)


def x_labels(bins: Bins, width: int) -> list[tuple[int, str]]:
    """(column, label) of the x ticks that fit side by side."""
    if bins.log_x:
        k0, k1 = math.ceil(math.log10(bins.lo) - 1e-9), math.floor(math.log10(bins.hi) + 1e-9)
        ticks = [(10.0 ** k, fmt_decade(k)) for k in range(k0, k1 + 1)]
        cols = [round(math.log(t / bins.lo) / math.log(bins.hi / bins.lo) * width) for t, _ in ticks]
    else:
        values = nice_ticks(bins.lo, bins.hi, max(1, width // 10))
        step = values[1] - values[0] if len(values) > 1 else bins.hi
        ticks = [(v, fmt_tick(v, step)) for v in values]
        cols = [round((v - bins.lo) / (bins.hi - bins.lo) * width) for v, _ in ticks]
    out: list[tuple[int, str]] = []
    free = 0
    for col, (_, label) in zip(cols, ticks, strict=True):
        start = min(col, width - len(label))
        if start >= free and start >= 0:
            out.append((start, label))
            free = start + len(label) + 2
    return out


def y_labels(top: float, rows: int, log_counts: bool) -> tuple[dict[int, str], float]:
    """Row (0 = bottom) -> label, and the count the top row stands for."""
    if log_counts:
        decades = max(1, math.ceil(math.log10(max(top, 1.0) + 1) - 1e-9))
        scale = math.log10(10.0 ** decades + 1)
        ticks = [(10.0 ** k, fmt_decade(k) if k < 3 else f"{10 ** (k - 3):g}k") for k in range(decades + 1)]
        place = [(round(math.log10(v + 1) / scale * rows) - 1, label) for v, label in ticks]
        top_value = 10.0 ** decades
    else:
        top_value, values = nice_top(top, max(1, min(rows // 2, 6)))  # a tick every other row at most, 6 at most
        step = values[1] - values[0] if len(values) > 1 else top_value
        place = [(round(v / top_value * rows) - 1, fmt_tick(v, step)) for v in values if v > 0]
    labels: dict[int, str] = {}
    for row, label in sorted(place, reverse=True):  # from the top, skipping rows too close
        if 0 <= row < rows and all(abs(row - r) >= 2 for r in labels):
            labels[row] = label
    return labels, top_value


def _heights(counts: np.ndarray, top_value: float, rows: int, log_counts: bool) -> np.ndarray:
    """Bar heights in eighths of a row; any non-zero count gets at least one eighth."""
    c = counts.astype(np.float64)
    scaled = np.log10(c + 1) / math.log10(top_value + 1) if log_counts else c / top_value
    eighths = np.round(scaled * rows * 8).astype(np.int64)
    return np.where(counts > 0, np.maximum(eighths, 1), 0)


def gutter_width(bins: Bins, rows: int, log_counts: bool) -> int:
    """Columns the y labels and the axis take."""
    labels, _ = y_labels(max(float(bins.total.max()) if bins.total.size else 1.0, 1.0), rows, log_counts)
    return max((len(s) for s in labels.values()), default=1) + 1


def draw(bins: Bins, width: int, height: int, title: Text, log_counts: bool, gutter: int) -> Text:
    """The whole widget: title row, bar rows with a y axis, x labels; `bins` span width - gutter."""
    out = Text(no_wrap=True, overflow="ellipsis")
    rows = height - 2
    plot_w = width - gutter
    if rows < 1 or plot_w < 8:
        out.append_text(title)
        return out
    top = float(bins.total.max()) if bins.total.size else 1.0
    labels, top_value = y_labels(max(top, 1.0), rows, log_counts)
    total_h = _heights(bins.total, top_value, rows, log_counts)
    cut_h = np.minimum(_heights(bins.cut, top_value, rows, log_counts), total_h)
    kept_h = total_h - cut_h
    # keep both parts of a mixed bar visible
    mixed = (bins.cut > 0) & (bins.cut < bins.total) & (total_h >= 2)
    cut_h = np.where(mixed & (kept_h == 0), total_h - 1, cut_h)
    cut_h = np.where(mixed & (cut_h == 0), 1, cut_h)
    col_bar = np.repeat(np.arange(bins.total.size), np.diff(bins.columns))
    wide = np.diff(bins.columns) >= 3  # wide bars get a gap column so neighbours stay apart
    gap = np.zeros(max(plot_w, int(bins.columns[-1])), dtype=bool)
    gap[bins.columns[1:][wide] - 1] = True
    red, green = Style(color=CUT_COLOUR), Style(color=KEPT_COLOUR)
    red_on_green = Style(color=CUT_COLOUR, bgcolor=KEPT_COLOUR)
    line = Style(color=LINE_COLOUR)
    axis = Style(dim=True)

    out.append_text(title.copy())
    for row in range(rows - 1, -1, -1):
        out.append("\n")
        label = labels.get(row, "")
        out.append(label.rjust(gutter - 1) + ("┤" if label else "│"), axis)
        base = row * 8
        run_chars: list[str] = []
        run_style: Style | None = None
        for col in range(plot_w):
            b = col_bar[col] if col < col_bar.size else -1
            char, style = " ", None
            if b >= 0 and not gap[col]:
                c, t = int(cut_h[b]), int(cut_h[b] + kept_h[b])
                if c >= base + 8:
                    char, style = "█", red
                elif c > base:
                    char = BLOCKS[c - base]
                    style = red_on_green if t >= base + 8 else red
                elif t >= base + 8:
                    char, style = "█", green
                elif t > base:
                    char, style = BLOCKS[t - base], green
            if char == " " and col == bins.threshold_col:
                char, style = "▏", line
            if style is not run_style and run_chars:
                out.append("".join(run_chars), run_style)
                run_chars = []
            run_style = style
            run_chars.append(char)
        if run_chars:
            out.append("".join(run_chars), run_style)
    out.append("\n")
    axis_row = [" "] * plot_w
    for start, text in x_labels(bins, plot_w):
        axis_row[start:start + len(text)] = list(text)
    out.append(" " * gutter + "".join(axis_row)[:plot_w], axis)
    return out


class GammaHistogram(Widget):
    """Histogram of |gamma| scores with the cut marked (see module docstring).

    `set_values` once per model; `set_cut(threshold, cut_values)` per plan. Keys of the
    inspector toggle `log_scale` (counts) and `log_x` (the |gamma| axis).
    """

    DEFAULT_CSS = """
    GammaHistogram { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(self, *, title: str = "|gamma|", id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.log_scale = False  # counts axis
        self.log_x: bool | None = None  # None: chosen from the data (log for sparse models)
        self.threshold: float | None = None
        self.values = np.zeros(0)  # ascending
        self.cut_values = np.zeros(0)  # ascending
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache: Text = Text("")
        self._bins: Bins | None = None

    # ------------------------------------------------------------ data

    def set_values(self, values: np.ndarray) -> None:
        """The scores to bin (finite ones); the cut is recomputed from the threshold."""
        v = np.asarray(values, dtype=np.float64)
        v = np.sort(v[np.isfinite(v)])
        self.values = v
        self.set_cut(self.threshold)

    def set_cut(self, threshold: float | None, cut_values: np.ndarray | None = None) -> None:
        """The threshold line, and the channels the plan cuts (default: those below the threshold)."""
        self.threshold = threshold if threshold is not None and math.isfinite(threshold) else None
        if cut_values is None:
            n = int(np.searchsorted(self.values, self.threshold, side="left")) if self.threshold is not None else 0
            self.cut_values = self.values[:n]
        else:
            c = np.asarray(cut_values, dtype=np.float64)
            self.cut_values = np.sort(c[np.isfinite(c)])
        self._changed()

    def set_threshold(self, threshold: float | None) -> None:
        self.set_cut(threshold)

    def set_log(self, log: bool) -> None:
        self.log_scale = log
        self._changed()

    def set_log_x(self, log_x: bool) -> None:
        self.log_x = log_x
        self._changed()

    @property
    def showing_log_x(self) -> bool:
        return self.log_x if self.log_x is not None else is_sparse(self.values)

    def _changed(self) -> None:
        self._version += 1
        self.refresh()

    # ------------------------------------------------------------ frame

    def bins_for(self, plot_width: int) -> Bins:
        n = self.values.size
        bars = min(plot_width, max(8, int(2 * math.sqrt(n)))) if n else 1
        return make_bins(self.values, self.cut_values, self.threshold, plot_width, self.showing_log_x, bars)

    @property
    def counts(self) -> np.ndarray:
        """Channels per bar of the frame on screen (every value lands in one bar)."""
        bins = self._bins or self.bins_for(48)
        return bins.total

    def title_text(self, width: int) -> Text:
        n, cut = self.values.size, self.cut_values.size
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.title, "bold")
        if self.threshold is not None:
            text.append("  ▏", LINE_COLOUR)
            text.append("threshold ", "dim")
            text.append(fmt_gamma(self.threshold), Style(color=LINE_COLOUR, bold=True))
        text.append("  ")
        text.append("█", CUT_COLOUR)
        text.append(f" cut {cut}  ")
        text.append("█", KEPT_COLOUR)
        text.append(f" kept {n - cut}")
        text.append("  " + ("log" if self.showing_log_x else "linear") + " x (v)", "dim")
        text.append("  " + ("log" if self.log_scale else "linear") + " counts (l)", "dim")
        text.truncate(width, overflow="ellipsis")
        return text

    def render(self) -> RenderResult:
        width, height = self.content_size
        key = (width, height, self._version)
        if key == self._cache_key:
            return self._cache
        self._cache_key = key
        title = self.title_text(width)
        if not self.values.size:
            self._cache = Text.assemble(title, "\n", ("no |gamma| values", "dim"))
            return self._cache
        # The y labels' width depends on the tallest bar, which depends on the bars' width:
        # bin for a gutter wide enough for every channel in one bar, then for the labels needed.
        rows = max(1, height - 2)
        widest = len(fmt_tick(nice_top(float(self.values.size), 1)[0], 1.0)) + 1
        bins = self.bins_for(max(1, width - widest))
        gutter = gutter_width(bins, rows, self.log_scale)
        if gutter != widest:
            bins = self.bins_for(max(1, width - gutter))
            gutter = max(gutter, gutter_width(bins, rows, self.log_scale))
        self._bins = bins
        self._cache = draw(bins, width, height, title, self.log_scale, gutter)
        return self._cache
