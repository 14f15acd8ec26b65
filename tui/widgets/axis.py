"""Axis ticks people read at a glance: round steps (1, 2, 5 x 10^k), decades on log axes.

Shared by the gamma histogram and the plotext plots (sweep, monitor), so every axis in the
workbench labels the same way.
"""

from __future__ import annotations

import math


def nice_step(span: float, count: int) -> float:
    """The round step (1, 2 or 5 x 10^k) whose number of intervals over `span` is closest to `count`."""
    if span <= 0 or not math.isfinite(span) or count < 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(span / count))
    candidates = [m * power for m in (1.0, 2.0, 5.0, 10.0)]
    return min(candidates, key=lambda step: (abs(span / step - count), -step))


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round values in [lo, hi], about `count` intervals apart, low end first."""
    step = nice_step(hi - lo, max(1, count))
    out = []
    k = math.ceil(lo / step - 1e-9)
    while k * step <= hi + 1e-9 * max(1.0, abs(hi)):
        out.append(round(k * step, 12))
        k += 1
    return out


def nice_top(value: float, intervals: int) -> tuple[float, list[float]]:
    """The axis top (a round value >= `value`) and its ticks from 0, in at most `intervals` steps
    of 1, 2, 2.5 or 5 x 10^k: for counts and percents, where every tick needs its own row."""
    if value <= 0 or not math.isfinite(value):
        return 1.0, [0.0, 1.0]
    intervals = max(1, intervals)
    power = 10.0 ** math.floor(math.log10(value / intervals))
    for step in (m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0)):
        n = math.ceil(value / step - 1e-9)
        if n <= intervals:
            return n * step, [round(i * step, 12) for i in range(n + 1)]
    step = 100.0 * power
    n = math.ceil(value / step - 1e-9)
    return n * step, [round(i * step, 12) for i in range(n + 1)]


def decimals_of(step: float) -> int:
    """Decimals needed to write multiples of `step` exactly: 250 -> 0, 0.25 -> 2, 0.1 -> 1."""
    for d in range(0, 10):
        if abs(round(step, d) - step) <= 1e-9 * max(1.0, abs(step)):
            return d
    return 10


def fmt_tick(value: float, step: float) -> str:
    """A tick label with just the decimals its step needs: 0.05, 0.1, 250, 15k, 2e-05."""
    if value == 0:
        return "0"
    if abs(value) >= 1e4:
        return f"{value / 1000:g}k"
    if abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return f"{value:.{decimals_of(step) if step > 0 else 0}f}"


def fmt_decade(k: int) -> str:
    """10^k as people write it on an axis: 0.01, 1, 1000, 1e-5."""
    return f"{10.0 ** k:g}" if -3 <= k <= 3 else f"1e{k}"


def percent_ticks(rows: int) -> list[float]:
    """Ticks for a 0-100 axis that fit `rows` text rows without crowding: 0-100, then halves, quarters."""
    if rows >= 9:
        return [0.0, 25.0, 50.0, 75.0, 100.0]
    if rows >= 5:
        return [0.0, 50.0, 100.0]
    return [0.0, 100.0]
