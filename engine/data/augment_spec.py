"""Augmentation ops by name with their parameters, checked without torch.

Presets are validated before any work starts, so this module stays importable
without torch; `engine.data.augment` implements the ops. A preset writes

    augment:
      - random_crop: {padding: 4}
      - horizontal_flip
      - color_jitter: {brightness: 0.2}

or `augment: true` (random_crop + horizontal_flip, the usual small-image recipe) /
`augment: false` (none). Flips suit natural images; leave them out for digits and text.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]  # None when the value is valid, else what is wrong


def _number(lo: float, hi: float, *, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return f"must be a number, got {v!r}"
        if v < lo or v > hi or (lo_open and v == lo):
            low = "(" if lo_open else "["
            return f"must lie in {low}{lo}, {hi}], got {v}"
        return None

    return check


def _count(lo: int) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            return f"must be a whole number >= {lo}, got {v!r}"
        return None

    return check


def _choice(*options: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}, got {v!r}"

    return check


def _range(lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list | tuple) or len(v) != 2:
            return f"must be a pair [low, high], got {v!r}"
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int | float) or not lo < x <= hi:
                return f"values must lie in ({lo}, {hi}], got {v!r}"
        if v[0] > v[1]:
            return f"low must not exceed high, got {v!r}"
        return None

    return check


# name -> {parameter: (default, check)}; the order here is the order of the docs.
OPS: dict[str, dict[str, tuple[Any, Check]]] = {
    # Random crop of the image padded by `padding` pixels on every side (zeros: black,
    # reflect: mirrored without the edge row, edge: the edge row repeated).
    "random_crop": {
        "padding": (4, _count(0)),
        "padding_mode": ("zeros", _choice("zeros", "reflect", "edge")),
    },
    "horizontal_flip": {"p": (0.5, _number(0.0, 1.0))},
    "vertical_flip": {"p": (0.5, _number(0.0, 1.0))},
    # A random area fraction `scale` and aspect `ratio` of the image, resized to image_size.
    # Streaming cuts it from the full-resolution file; in memory, from the cached image.
    "random_resized_crop": {
        "scale": ([0.08, 1.0], _range(0.0, 1.0)),
        "ratio": ([0.75, 4 / 3], _range(0.0, 100.0)),
    },
    # Each factor drawn from [1 - x, 1 + x] per image (brightness, then contrast, then saturation).
    "color_jitter": {
        "brightness": (0.4, _number(0.0, 1.0)),
        "contrast": (0.4, _number(0.0, 1.0)),
        "saturation": (0.4, _number(0.0, 1.0)),
    },
    # A square of side `size` x the image side, centred anywhere (clipped at the border),
    # filled with the dataset's mean colour (0 after normalisation); applied with probability p.
    "cutout": {"size": (0.5, _number(0.0, 1.0, lo_open=True)), "p": (1.0, _number(0.0, 1.0))},
}

# `augment: true`: the standard CIFAR-style recipe.
DEFAULT = ("random_crop", "horizontal_flip")
# Ops that decide which part of the source image is used: they must come first.
FRAMING = ("random_resized_crop",)


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _one(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        name, given = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        name, given = next(iter(entry.items()))
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise ValueError(
                f"{name}: parameters are a mapping, e.g. {{{name}: {{...}}}}, got {given!r}"
            )
    else:
        raise ValueError(
            f"each augmentation is a name or {{name: {{parameters}}}}, got {entry!r}"
        )
    if name not in OPS:
        raise ValueError(
            f"unknown augmentation {name!r}{_did_you_mean(str(name), list(OPS))} "
            f"(ops: {', '.join(OPS)})"
        )
    spec = OPS[name]
    params = {}
    for key, value in given.items():
        if key not in spec:
            raise ValueError(
                f"{name} has no parameter {key!r}{_did_you_mean(str(key), list(spec))} "
                f"(parameters: {', '.join(spec) or 'none'})"
            )
        problem = spec[key][1](value)
        if problem:
            raise ValueError(f"{name}.{key} {problem}")
        params[key] = list(value) if isinstance(value, tuple) else value
    return name, {k: params.get(k, default) for k, (default, _) in spec.items()}


def parse(value: Any) -> list[dict[str, dict[str, Any]]]:
    """`augment` as written in a preset -> [{op: {every parameter}}, ...] (idempotent)."""
    if value is True:
        value = list(DEFAULT)
    elif value is False or value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"augment is true, false or a list of ops ({', '.join(OPS)}), got {value!r}"
        )
    ops = [_one(entry) for entry in value]
    for i, (name, _) in enumerate(ops):
        if name in FRAMING and i > 0:
            raise ValueError(
                f"{name} chooses the part of the image that is used: list it first "
                f"(it is at position {i + 1})"
            )
    return [{name: params} for name, params in ops]


def ops_of(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """The parsed ops as (name, parameters) pairs."""
    return [next(iter(op.items())) for op in parse(value)]
