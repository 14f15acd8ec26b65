"""Sparsity training: the L1 penalty on BatchNorm gamma that network slimming trains with."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from engine.errors import PruneError
from engine.slim.spec import S_HINT

SPARSE_THRESHOLDS = (1e-2, 1e-3)


def bn_weights(model: nn.Module, exclude: Sequence[str] = ()) -> list[tuple[str, nn.Parameter]]:
    """(name, gamma) of every affine BatchNorm whose name matches none of `exclude` (fnmatch)."""
    out = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or m.weight is None:
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        out.append((name, m.weight))
    return out


def sparsity_figures(
    names: Sequence[str], weights: Sequence[torch.Tensor], initial: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Overall and per-layer figures of |gamma|.

    Absolute: fractions below 1e-2 / 1e-3 (`gamma_lt_*`) and quantiles q10/q50/q90. With `initial`
    (each layer's gamma at initialisation, engine/slim/gamma_ref.py) also the same fractions of
    |gamma| / initial gamma (`gamma_rel_lt_*`), which mean the same for every model, and the
    relative median `gamma_rel_q50`. Per-layer fractions below 1e-2 (relative when `initial` is
    given) are flat keys `sparsity/<layer>` so a metrics line stays flat floats.
    """
    if not weights:
        return {}
    with torch.no_grad():
        flat = torch.cat([w.detach().reshape(-1) for w in weights]).abs().float().cpu().numpy()
    sizes = np.array([w.numel() for w in weights])
    figures: dict[str, float] = {}
    for t in SPARSE_THRESHOLDS:
        figures[_key("gamma_lt", t)] = float((flat < t).mean())
    q10, q50, q90 = np.quantile(flat, [0.1, 0.5, 0.9])
    figures.update(gamma_q10=float(q10), gamma_q50=float(q50), gamma_q90=float(q90))
    per_layer = flat
    if initial is not None:
        scale = np.repeat([float(initial.get(n, 1.0)) or 1.0 for n in names], sizes)
        rel = flat / scale
        for t in SPARSE_THRESHOLDS:
            figures[_key("gamma_rel_lt", t)] = float((rel < t).mean())
        figures["gamma_rel_q50"] = float(np.median(rel))
        per_layer = rel
    small = np.add.reduceat(
        (per_layer < SPARSE_THRESHOLDS[0]).astype(np.int64), np.r_[0, np.cumsum(sizes)[:-1]]
    )
    for name, n_small, size in zip(names, small, sizes, strict=True):
        figures[f"sparsity/{name}"] = float(n_small / size)
    return figures


def _key(prefix: str, t: float) -> str:
    return f"{prefix}_{t:.0e}".replace("e-0", "e-")


class SparsePenalty:
    """Trainer callback adding the subgradient of s * sum|gamma| to every BatchNorm gamma grad.

    `decay` lowers s linearly to 10% over the run (s * (1 - 0.9 * epoch / epochs)). The penalty is
    added once per optimizer step after gradients are all-reduced (DDP) and unscaled (AMP); it is
    the same on every rank because the weights are. `s` may be changed between epochs (s: auto).
    `initial` (per-layer gamma at initialisation) adds the relative gamma figures to each epoch.
    """

    def __init__(self, s: float = 1e-4, decay: bool = False, exclude: Sequence[str] = (),
                 initial: Mapping[str, float] | None = None) -> None:
        if not (isinstance(s, (int, float)) and np.isfinite(s) and s >= 0):
            raise PruneError(f"sparsity s={s!r} must be a finite number >= 0. {S_HINT}")
        self.s = float(s)
        self.decay = bool(decay)
        self.exclude = list(exclude)
        self.initial = dict(initial) if initial is not None else None
        self.names: list[str] = []
        self.weights: list[nn.Parameter] = []
        self.s_eff = self.s

    def s_at(self, epoch: int, epochs: int) -> float:
        """The penalty strength used during `epoch` (0-based) of `epochs`."""
        if not self.decay or epochs <= 0:
            return self.s
        return self.s * (1.0 - 0.9 * epoch / epochs)

    def on_fit_start(self, trainer) -> None:
        pairs = [(n, w) for n, w in bn_weights(trainer.model, self.exclude) if w.requires_grad]
        if not pairs:
            raise PruneError(
                f"sparsity training found no trainable affine BatchNorm in {type(trainer.model).__name__}"
                + (f" outside exclude={self.exclude}" if self.exclude else "")
                + ": network slimming penalises BatchNorm gamma, so the model needs BatchNorm layers"
            )
        self.names = [n for n, _ in pairs]
        self.weights = [w for _, w in pairs]
        self.s_eff = self.s_at(trainer.epoch, trainer.epochs)

    def after_backward(self, trainer) -> None:
        if not self.weights:
            return
        self.s_eff = self.s_at(trainer.epoch, trainer.epochs)
        if self.s_eff == 0.0:
            return
        grads = []
        for w in self.weights:
            if w.grad is None:  # a BatchNorm unused in this forward still gets its L1 push
                w.grad = torch.zeros_like(w)
            grads.append(w.grad)
        with torch.no_grad():
            signs = torch._foreach_sign(self.weights)
            torch._foreach_add_(grads, signs, alpha=self.s_eff)

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        figures = sparsity_figures(self.names, self.weights, self.initial)
        figures["s"] = self.s_at(epoch, trainer.epochs)
        return figures
