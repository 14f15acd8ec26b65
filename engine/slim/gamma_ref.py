"""Each BatchNorm's initial gamma: the scale that makes gamma statistics comparable across models.

VGG (as in the slimming reference code) starts every gamma at 0.5, ResNets at 1.0, so "|gamma|
below 1e-2" means something else for each. Dividing by the layer's gamma at initialisation makes
"below 1e-2" mean "shrunk to 1% of where it started" for every model. The reference is read from a
freshly built model of the same architecture (RNG state preserved, so training is unaffected);
a layer initialised at zero (zero-init residual BatchNorm) uses the median of the other layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from engine.slim.sparse import bn_weights


def initial_gamma(arch: dict | None, model: nn.Module) -> dict[str, float]:
    """Mean |gamma| at initialisation of every affine BatchNorm of `model`, by name.

    `arch` is the checkpoint's arch dict (built afresh to read the initial values); without one, or
    when it cannot be built, the model's own median |gamma| stands in for every layer.
    """
    names = [n for n, _ in bn_weights(model)]
    ref: dict[str, float] = {}
    if arch is not None:
        from engine import checkpoint

        try:
            with torch.random.fork_rng(devices=[]):
                fresh = checkpoint.build_model(arch)
            fresh_bn = dict(bn_weights(fresh))
            ref = {n: float(fresh_bn[n].detach().abs().mean()) for n in names if n in fresh_bn}
        except Exception:  # an arch that cannot be rebuilt here: fall back to the model's own scale
            ref = {}
    positive = [v for v in ref.values() if v > 0]
    if positive:
        fallback = float(np.median(positive))
    else:
        current = torch.cat([w.detach().abs().reshape(-1).float().cpu() for _, w in bn_weights(model)] or [torch.ones(1)])
        fallback = float(current.median()) or 1.0
    return {n: ref[n] if ref.get(n, 0) > 0 else fallback for n in names}


def reference_scale(ref: dict[str, float], names: Sequence[str]) -> float:
    """One number for a model: the median initial gamma of `names` (for messages and s: auto)."""
    values = [ref[n] for n in names if n in ref]
    return float(np.median(values)) if values else 1.0
