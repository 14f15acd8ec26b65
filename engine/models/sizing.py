"""Checks and channel arithmetic shared by the built-in architectures."""

from __future__ import annotations

import math
import re
from numbers import Real

from engine.errors import ModelError, PresetError

SMALLEST_WIDTH = 8  # fewer channels than this leaves slimming nothing to choose from


def check_positive_int(arch: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{arch}: {name} must be a positive integer, got {value!r}.")
    return value


def check_multiplier(arch: str, name: str, value: object) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ModelError(
            f"{arch}: {name} must be a positive number such as 0.5 or 1.0, got {value!r}."
        )
    return float(value)


def check_choice(arch: str, name: str, value: object, choices: tuple[int, ...]) -> int:
    if isinstance(value, bool) or value not in choices:
        valid = ", ".join(str(c) for c in choices)
        raise ModelError(f"{arch}: {name} must be one of {valid}, got {value!r}.")
    return int(value)  # type: ignore[arg-type]


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (VGG/ResNet rule: plain rounding, floor of 8)."""
    return max(SMALLEST_WIDTH, round(channels * width))


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet/YOLOv5 rule: round to a multiple of `divisor`, never dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def input_size(in_channels: int, side: int = 32) -> tuple[int, int, int]:
    return (in_channels, side, side)


def parse_input_size(text: str) -> tuple[int, int, int]:
    """`3x32x32` (also `3,32,32` or `3 32 32`) -> (3, 32, 32): channels, height, width.

    Raises PresetError (bad usage) naming the text and the expected form.
    """
    parts = [p for p in re.split(r"[x×,\s]+", str(text).strip().lower()) if p]
    dims = tuple(int(p) for p in parts) if all(p.isascii() and p.isdigit() for p in parts) else ()
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise PresetError(
            f"input size {text!r} is not CxHxW (channels x height x width, three positive integers), "
            "e.g. 3x32x32"
        )
    return dims  # type: ignore[return-value]


def parse_batch(text: str) -> int | None:
    """An export's batch: `dynamic` (None: any batch size) or a fixed batch size >= 1."""
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise PresetError(f"--batch {text!r}: give 'dynamic' or a batch size >= 1")
