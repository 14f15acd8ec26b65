"""Checking a cut on a dummy batch before anyone keeps it.

The pruned model must return what the original returns when the cut channels are zeroed where
layers read them (masked equivalence): same outputs, same shapes, same values up to float
rounding. Zeroing at the reading layer makes the check exact whatever the activations are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from engine.slim.cut import kept
from engine.slim.trace import Trace, flatten_tensors, traceable

BATCH = 1  # the batch the trace ran at; BatchNorm in eval mode treats samples alike
RTOL, ATOL = 1e-3, 1e-4  # float rounding differs (fewer terms summed); a wrong cut differs by O(1)


def dummy_batch(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn((BATCH, *shape), generator=gen).to(device)


@contextlib.contextmanager
def masked(trace: Trace, atoms: np.ndarray) -> Iterator[None]:
    """Zero the channels holding `atoms` at every conv/linear input that reads them."""
    hooks = []
    for layer in trace.layers.values():
        if layer.kind not in ("conv", "linear") or layer.inp is None:
            continue
        keep = kept(trace, layer.inp, atoms)
        if keep.all():
            continue
        zero = torch.from_numpy(np.flatnonzero(~keep))
        spatial = layer.module.weight.dim() - 2 if layer.kind == "conv" else None

        def pre(module: nn.Module, args: tuple, zero: torch.Tensor = zero, spatial: int | None = spatial) -> tuple:
            x = args[0]
            cdim = x.dim() - 1 if spatial is None else x.dim() - spatial - 1
            return (x.index_fill(cdim, zero.to(x.device), 0.0), *args[1:])

        hooks.append(layer.module.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with traceable(model), torch.no_grad():
        return [t.detach().float().cpu() for t in flatten_tensors(model(x))]


def compare(ref: list[torch.Tensor], out: list[torch.Tensor]) -> str | None:
    """What differs between the original's (masked) outputs and the pruned model's, or None."""
    if len(ref) != len(out):
        return f"returns {len(out)} tensors where the original returns {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, out, strict=True)):
        which = f" (output {i})" if len(ref) > 1 else ""
        if a.shape != b.shape:
            return f"returns shape {tuple(b.shape)} where the original returns {tuple(a.shape)}{which}"
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        if not torch.equal(fa, fb):
            return f"returns non-finite values where the original does not{which}"
        if fa.any():
            diff = float((a[fa] - b[fa]).abs().max())
            scale = float(a[fa].abs().max())
            if diff > RTOL * scale + ATOL:
                return f"computes other values{which}: max difference {diff:.3g} on outputs up to {scale:.3g}"
    return None
