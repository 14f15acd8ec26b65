"""The |gamma| histogram tells the truth at every threshold: bars split at the cut, red is cut,
the x range stays put, ticks are round, and legends sit above the plots, never on the data."""

from __future__ import annotations

import re

import numpy as np
import pytest
from rich.text import Text
from textual.app import App, ComposeResult

from tui.app import make_app
from tui.widgets.axis import fmt_tick, nice_ticks, percent_ticks
from tui.widgets.histogram import (
    BLOCKS,
    CUT_COLOUR,
    KEPT_COLOUR,
    GammaHistogram,
    draw,
    make_bins,
    x_labels,
    y_labels,
)
from tui.widgets.inspector_modals import OverrideModal
from tui.widgets.inspector_sweep import SweepPlot
from tui.widgets.plots import Line, MetricPlot

from helpers import make_sparse_checkpoint, run_async, sparse_gammas, wait_for

# Plot widths of the inspector's histogram at 80 and 120 columns (less the y labels).
WIDTHS = (77, 117)


def demo_like(n: int = 688, seed: int = 0) -> np.ndarray:
    return np.sort(sparse_gammas(n, np.random.default_rng(seed)))


def quantile_threshold(values: np.ndarray, percent: float) -> float:
    return float(values[int(values.size * percent)])  # what the engine's percent rule does


@pytest.mark.parametrize("log_x", [False, True], ids=["linear", "log"])
@pytest.mark.parametrize("width", WIDTHS)
def test_bars_split_at_the_threshold_across_the_crowded_low_end(width, log_x):
    values = demo_like()
    ranges, labels = set(), set()
    for percent in np.arange(0.60, 0.76, 0.01):
        thr = quantile_threshold(values, percent)
        assert 0.005 < thr < 0.03 or not 0.64 <= percent <= 0.73  # the range the issue names
        cut = values[values < thr]
        bins = make_bins(values, cut, thr, width, log_x, bars=width)
        assert int(bins.total.sum()) == values.size and int(bins.cut.sum()) == cut.size
        assert bins.columns[0] == 0 and bins.columns[-1] == width  # nothing drawn past the plot
        col = bins.threshold_col
        assert 0 < col < width
        left = bins.columns[1:] <= col
        assert (bins.cut[left] == bins.total[left]).all(), f"a bar left of the cut holds kept channels at {percent:.2f}"
        assert (bins.cut[~left] == 0).all(), f"a bar right of the cut holds cut channels at {percent:.2f}"
        ranges.add((bins.lo, bins.hi))
        labels.add(tuple(x_labels(bins, width)))
    assert len(ranges) == 1 and len(labels) == 1  # the x axis never moves with the threshold
    if not log_x:
        assert next(iter(labels))[0] == (0, "0")  # 0 stays at the left edge


def test_every_cut_channel_is_drawn_red_even_in_the_first_bar():
    values = demo_like()
    thr = quantile_threshold(values, 0.5)  # all 344 cut channels are below the first linear bin's edge
    cut = values[values < thr]
    assert cut.size == 344
    bins = make_bins(values, cut, thr, 77, False, bars=48)
    assert bins.threshold_col >= 1 and bins.total[0] == bins.cut[0] == 344
    frame = draw(bins, 80, 10, Text("t"), False, gutter=3)
    colours = cell_colours(frame)
    bottom = colours[8]  # the lowest bar row
    assert bottom[3] == CUT_COLOUR  # the first plot column: red, not green
    assert all(c != CUT_COLOUR for c in bottom[3 + bins.threshold_col:])


def test_a_bar_holding_cut_and_kept_channels_is_stacked():
    values = demo_like()
    thr = quantile_threshold(values, 0.6)
    below = values[values < thr]
    cut = below[: below.size // 2]  # an override or min_keep keeps half of those below the threshold
    bins = make_bins(values, cut, thr, 77, True, bars=40)
    mixed = (bins.cut > 0) & (bins.cut < bins.total)
    assert mixed.any()
    frame = draw(bins, 80, 12, Text("t"), False, gutter=3)
    first_mixed = int(bins.columns[np.flatnonzero(mixed)[0]])
    column = [row[3 + first_mixed] for row in cell_colours(frame)[1:11]]
    assert CUT_COLOUR in column and KEPT_COLOUR in column


def test_layer_histogram_range_is_fixed_by_its_values():
    values = demo_like(64, seed=3)
    for log_x in (False, True):
        frames = {(b.lo, b.hi, tuple(x_labels(b, 60)))
                  for b in (make_bins(values, values[values < t], t, 60, log_x, bars=16) for t in (1e-6, 0.01, 0.3, 2.0))}
        assert len(frames) == 1  # the dialog's x range does not flip with the threshold
    beyond = make_bins(values, values, 2.0, 60, False, bars=16)  # a threshold above every value
    assert beyond.threshold_col == 60 and int(beyond.cut.sum()) == 64 and (beyond.cut == beyond.total).all()


@pytest.mark.parametrize(("rows", "expected"), [(4, {"250", "500"}), (6, {"200", "400", "600"}),
                                                  (10, {"100", "200", "300", "400", "500"})])
def test_count_ticks_are_round_and_spaced(rows, expected):
    labels, top = y_labels(480, rows, log_counts=False)  # never 480/240/120/0
    assert set(labels.values()) == expected and top == max(int(v) for v in expected)
    rows_used = sorted(labels)
    assert all(b - a >= 2 for a, b in zip(rows_used, rows_used[1:], strict=False))
    assert max(labels) == rows - 1  # the top tick labels the top row
    tall, _ = y_labels(20, 29, log_counts=False)  # the override dialog's tall histogram: not a tick every other row
    assert set(tall.values()) == {"5", "10", "15", "20"}
    log_labels, _ = y_labels(480, rows, log_counts=True)
    assert set(log_labels.values()) <= {"1", "10", "100", "1000", "1k"}


def test_percent_and_numeric_ticks():
    assert percent_ticks(3) == [0.0, 100.0] and percent_ticks(6) == [0.0, 50.0, 100.0]
    assert percent_ticks(12) == [0.0, 25.0, 50.0, 75.0, 100.0]  # never 100/25/0
    assert nice_ticks(0.07, 4.16, 4) == [1.0, 2.0, 3.0, 4.0] and nice_ticks(0.0, 0.74, 4) == [0.0, 0.2, 0.4, 0.6]
    assert nice_ticks(10, 480, 4) == [100.0, 200.0, 300.0, 400.0]
    assert fmt_tick(250, 250) == "250" and fmt_tick(0.25, 0.25) == "0.25" and fmt_tick(0.4, 0.2) == "0.4"


class PlotApp(App):
    def compose(self) -> ComposeResult:
        yield MetricPlot("loss", "step", id="plot")


@run_async
async def test_metric_plot_legend_is_above_the_data():
    app = PlotApp()
    async with app.run_test(size=(80, 20)) as pilot:
        plot = app.query_one("#plot", MetricPlot)
        xs = list(range(1, 200))
        plot.show_lines([Line("train loss", xs, [2.0 / x for x in xs]), Line("val loss", xs, [2.5 / x for x in xs])])
        await pilot.pause()
        lines = plot.render().plain.splitlines()
        assert "train loss" in lines[0] and "val loss" in lines[0]
        assert not any("train loss" in line or "val loss" in line for line in lines[1:])
        assert lines[1].strip().startswith("┌")  # the plot's frame starts right under the legend


class SweepApp(App):
    def compose(self) -> ComposeResult:
        yield SweepPlot(id="sweep")


@pytest.mark.parametrize("size", [(80, 12), (120, 20)], ids=["short", "tall"])
@run_async
async def test_sweep_plot_ticks_are_round_and_its_legend_above(size):
    app = SweepApp()
    async with app.run_test(size=size) as pilot:
        plot = app.query_one("#sweep", SweepPlot)
        rows = [{"ratio": round(0.1 * i, 1), "accuracy": max(0.05, 0.98 - 0.9 * (0.1 * i) ** 3)} for i in range(10)]
        plot.set_rows(rows, "test")
        plot.set_current(0.68)
        await pilot.pause()
        lines = plot.render().plain.splitlines()
        assert "accuracy" in lines[0] and "now 68% removed" in lines[0]
        assert not any("now 68%" in line for line in lines[1:])
        ticks = [int(m.group(1)) for m in (re.match(r"\s*(\d+)\s*┤", line) for line in lines) if m]
        assert ticks[0] == 100 and ticks[-1] == 0, ticks  # top to bottom: never 100/25/0
        steps = {a - b for a, b in zip(ticks, ticks[1:], strict=False)}
        assert len(steps) == 1 and steps <= {25, 50}, ticks


def cell_colours(frame: Text) -> list[list[str | None]]:
    """The foreground colour name of every cell, row by row (background for the space cells)."""
    rows: list[list[str | None]] = []
    for line in frame.split("\n"):
        cells: list[str | None] = [None] * len(line.plain)
        for span in line.spans:
            style = span.style if not isinstance(span.style, str) else None
            name = style.color.name if style is not None and style.color is not None else None
            for i in range(span.start, span.end):
                cells[i] = name
        rows.append(cells)
    return rows


# ---------------------------------------------------------------- in the inspector, as drawn


def drawn_frame(hist) -> tuple[list[str], list[list[str | None]], int]:
    """The histogram's rendered lines, their cell colours and the gutter (y labels + axis)."""
    frame = hist.render()
    lines = frame.plain.split("\n")
    gutter = next(i for i, ch in enumerate(lines[1]) if ch in "│┤") + 1
    return lines, cell_colours(frame), gutter


def drawn_eighths(lines: list[str], gutter: int, width: int) -> list[int]:
    """Bar height of every plot column in eighths of a row, read off the frame."""
    heights = [0] * width
    for line in lines[1:-1]:
        for col, ch in enumerate(line[gutter:gutter + width]):
            heights[col] += 8 if ch == "█" else BLOCKS.index(ch) if ch in BLOCKS else 0
    return heights


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@run_async
async def test_inspector_histogram_is_right_across_the_natural_cut(tmp_path, size):
    # The sparse checkpoint's 64-73% cuts fall at |gamma| 0.006-0.024, where the histogram used
    # to fill the left part to the top and move 0 to the middle of the x axis.
    app = make_app(make_sparse_checkpoint(tmp_path / "sparse.pt"))
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.ready, what="the checkpoint")
        hist = screen.query_one("#histogram", GammaHistogram)
        for log_x in (True, False):
            if hist.showing_log_x != log_x:
                await pilot.press("v")
            steps = round((0.60 - screen.settings.percent) * 100)
            await pilot.press(*(["right"] * steps if steps > 0 else ["left"] * -steps))
            axes = set()
            for step in range(16):  # 60% .. 75%
                percent = 0.60 + step / 100
                await wait_for(pilot, lambda p=percent: screen.settings.percent == pytest.approx(p), 10, f"{percent:.2f}")
                await pilot.pause()
                lines, colours, gutter = drawn_frame(hist)
                bins, width = hist._bins, len(lines[1]) - gutter
                assert bins is not None and bins.columns[-1] == width
                axes.add(lines[-1])
                if not log_x:
                    assert lines[-1][gutter] == "0", f"0 left the left edge at {percent:.2f}"
                # every column is as tall as its bar's count says, so only the fullest bars reach the top
                rows = len(lines) - 2
                _, top = y_labels(float(bins.total.max()), rows, log_counts=False)
                bar_of = np.repeat(np.arange(bins.total.size), np.diff(bins.columns))
                expected = [int(round(bins.total[b] / top * rows * 8)) if bins.total[b] else 0 for b in bar_of]
                drawn = drawn_eighths(lines, gutter, width)
                for col in range(width):
                    if drawn[col]:  # a gap column between wide bars stays blank
                        assert abs(drawn[col] - max(expected[col], 1)) <= 1, f"column {col} at {percent:.2f}"
                red = {col - gutter for row in colours[1:-1] for col, c in enumerate(row) if c == CUT_COLOUR}
                assert red and max(red) < bins.threshold_col, f"red right of the threshold at {percent:.2f}"
                assert int(bins.cut.sum()) == hist.cut_values.size
                await pilot.press("right")
            assert len(axes) == 1, "the x axis moved with the threshold"


@run_async
async def test_override_dialog_histogram_keeps_its_x_range(tmp_path):
    app = make_app(make_sparse_checkpoint(tmp_path / "sparse.pt"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.ready, what="the checkpoint")
        axes: list[str] = []
        for presses in (["shift+right", *["right"] * 2], ["right"] * 10):  # 62%, then 72%
            await pilot.press(*presses)
            await pilot.pause(0.2)
            await pilot.press("down", "down", "enter")
            await wait_for(pilot, lambda: isinstance(app.screen, OverrideModal), 10, "the dialog")
            dialog = app.screen
            layer = dialog.query_one("#layer-hist", GammaHistogram)
            await pilot.pause(0.2)
            lines, _, gutter = drawn_frame(layer)
            assert len(lines) >= 6, "the dialog's histogram collapsed"
            axes.append(lines[-1])
            await pilot.press(*"keep 0.5")
            await pilot.pause(0.2)
            lines, colours, gutter = drawn_frame(layer)
            axes.append(lines[-1])
            red = sum(c == CUT_COLOUR for row in colours[1:-1] for c in row)
            assert red and layer.cut_values.size == layer.values.size - layer.values.size // 2
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen, 10, "the inspector")
            await pilot.press("up", "up")
        assert screen.settings.percent == pytest.approx(0.72)
        assert len(set(axes)) == 1, f"the dialog's x axis moved: {axes}"
