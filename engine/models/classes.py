"""How many classes a state_dict was trained for, read from the shapes of its tensors.

The architecture is built at two class counts; the tensors whose shapes move with the count
(a classifier's weight and bias, a detection head's `na * (nc + 5)` outputs) are compared with the
file's, which gives the count when every such tensor agrees.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import ModelError
from engine.trust import Trust

PROBES = (7, 11)  # two class counts unlikely to equal any layer width


def infer_num_classes(
    arch: str, in_channels: int, kwargs: dict[str, Any], state: dict[str, torch.Tensor], *, trust: Trust | None = None
) -> int:
    """The class count of `state` for `arch`, or ModelError saying to give it."""
    from engine.checkpoint import strip_prefix
    from engine.models.registry import build_from

    a, b = PROBES
    sa = build_from(arch, a, in_channels, dict(kwargs), trust=trust).state_dict()
    sb = build_from(arch, b, in_channels, dict(kwargs), trust=trust).state_dict()
    state = strip_prefix(state)
    counts: dict[str, int] = {}
    for key, ta in sa.items():
        tb, tf = sb.get(key), state.get(key)
        if tb is None or tf is None or ta.shape == tb.shape or tf.dim() != ta.dim():
            continue
        for x, y, z in zip(ta.shape, tb.shape, tf.shape, strict=True):
            if x == y:
                continue
            n = a + (z - x) * (b - a) / (y - x)  # shapes grow linearly with the count
            if n >= 1 and n == int(n):
                counts[key] = int(n)
            break
    found = set(counts.values())
    if len(found) == 1:
        return found.pop()
    why = (f"its tensors disagree ({', '.join(f'{k}: {v}' for k, v in list(counts.items())[:3])})" if counts
           else "no tensor's shape depends on it")
    raise ModelError(
        f"{arch}: cannot tell the number of classes from the checkpoint ({why}); give it with --num-classes"
    )


def takes_num_classes(arch: str, trust: Trust | None = None) -> bool:
    """Whether `arch`'s constructor takes num_classes (a built-in or torchvision model always does)."""
    from engine.models import catalog
    from engine.models.registry import check_trusted, external_signature, resolve_external, takes

    if not catalog.is_external(arch):
        return True
    check_trusted(arch, {}, trust, None)
    cls = resolve_external(arch)
    return takes(external_signature(arch, cls), "num_classes")
