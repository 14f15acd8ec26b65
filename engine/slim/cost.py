"""Params and FLOPs of a pruned model, estimated from kept-channel counts without rebuilding it.

Each conv/linear/BatchNorm (and any other layer or parameter a group cuts) gets, once, its
unpruned cost: FLOPs counted per module by torch.utils.flop_counter's formulas (see `module_flops`)
and its parameter count.
Pruning scales a conv's cost by (kept out / out) * (kept in / in) (grouped convs keep their groups),
a depthwise conv's (one input channel per group) and a BatchNorm's by kept out / out. Kept counts of a layer come from the groups that own its channels: whole-group
shares (count * multiplicity) or, for a layer holding part of a group (a concat slice), the number
of kept root channels in that part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from engine.measure import flop_counts, scaled_flop_counts
from engine.slim.gamma import bn_channels
from engine.slim.groups import ChannelGroup
from engine.slim.trace import layer_kind, size_multiple, traceable


def module_flops(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one forward at batch 1 and the FLOPs each module (by name) did itself or below.

    A model with a `size_multiple` is counted at small sizes and the figures scaled exactly
    (engine.measure.scaled_flop_counts): no forward at a large input size.
    """
    m = size_multiple(model, input_shape)
    counts = scaled_flop_counts(model, input_shape, m, traceable) if m else None
    return counts or flop_counts(model, input_shape, traceable)


def sizes_of(groups: list[ChannelGroup], name: str) -> int | None:
    """Channels of an out-side member as its group recorded them."""
    return next((g.sizes[name] for g in groups if name in g.sizes), None)


def _share(root_idxs: np.ndarray, offset: int, total: int) -> tuple[int, np.ndarray | None]:
    """A member's channels as a multiple of the whole group, else as explicit global channel ids."""
    hist = np.bincount(root_idxs, minlength=total)
    if hist.min() == hist.max() and hist[0] > 0:
        return int(hist[0]), None
    return 0, offset + root_idxs


@dataclass
class CostModel:
    """Vectorised params/FLOPs as a function of per-group kept counts (see module docstring)."""

    names: list[str]
    c0: np.ndarray  # (2, L) channels of each layer in no group: [out, in]
    full: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per side: (layer, group, multiplicity)
    part: list[tuple[np.ndarray, np.ndarray]]  # per side: (layer, global channel id)
    flops_unit: np.ndarray  # FLOPs per (kept out [* kept in]) channel
    weight_unit: np.ndarray  # parameters per (kept out [* kept in]) channel
    per_out: np.ndarray  # parameters per kept output channel (bias, BN affine)
    uses_in: np.ndarray  # bool: cost scales with kept inputs too (dense conv/linear)
    const_params: int
    const_flops: int
    params_before: int
    flops_before: int

    @classmethod
    def build(
        cls,
        model: nn.Module,
        groups: list[ChannelGroup],
        offsets: np.ndarray,
        input_shape: Sequence[int],
        flops: tuple[int, dict[str, int]] | None = None,
    ) -> CostModel:
        """`flops` (total, per module) as the channel trace counted them; else counted here."""
        flops_total, flops_of = flops if flops is not None else module_flops(model, input_shape)
        modules = dict(model.named_modules())
        members_of: dict[str, list[tuple[int, object]]] = {}
        for g in groups:
            for m in g.members:
                members_of.setdefault(m.name, []).append((g.id, m))
        tensors = {m.name: m for g in groups for m in g.members if m.kind == "param"}
        owners = {n.rpartition(".")[0] for n in tensors}  # their modules are costed through them
        names = [
            n for n, mod in modules.items()
            if n and n not in owners and (layer_kind(mod) != "other" or n in members_of)
        ] + sorted(tensors)
        parameters = dict(model.named_parameters())
        L = len(names)
        c0 = np.zeros((2, L), dtype=np.int64)
        full_rows: list[list[tuple[int, int, int]]] = [[], []]
        part_rows: list[list[tuple[int, np.ndarray]]] = [[], []]
        flops_unit = np.zeros(L)
        weight_unit = np.zeros(L)
        per_out = np.zeros(L)
        uses_in = np.zeros(L, dtype=bool)
        modelled_params = 0
        modelled_flops = 0
        for i, name in enumerate(names):
            if name in tensors:  # a parameter cut along one dimension, outside any layer
                p = parameters.get(name)
                own = p.numel() if p is not None else 0
                modelled_params += own
                n_out = n_in = sizes_of(groups, name) or 1
                c0[0, i], c0[1, i] = n_out, n_in
                for gid, m in members_of.get(name, []):
                    c0[0, i] -= len(m.idxs)
                    mult, ids = _share(m.root_idxs, int(offsets[gid]), groups[gid].total)
                    if ids is None:
                        full_rows[0].append((i, gid, mult))
                    else:
                        part_rows[0].append((i, ids))
                weight_unit[i] = own / max(n_out, 1)
                continue
            mod = modules[name]
            kind = layer_kind(mod)
            own = sum(p.numel() for p in mod.parameters(recurse=False))
            modelled_params += own
            base_flops = flops_of.get(name, 0)
            modelled_flops += base_flops
            bias = mod.bias.numel() if getattr(mod, "bias", None) is not None else 0
            if kind == "conv":
                n_out, n_in = mod.out_channels, mod.in_channels
                dense = mod.in_channels // mod.groups > 1  # groups stay; one input per group is depthwise
            elif kind == "linear":
                n_out, n_in, dense = mod.out_features, mod.in_features, True
            elif kind == "bn":
                n_out = n_in = bn_channels(mod)
                dense = False
            else:
                n_out = n_in = sizes_of(groups, name) or max(own, 1)
                dense = False
            c0[0, i], c0[1, i] = n_out, n_in
            for gid, m in members_of.get(name, []):
                side = 0 if m.side == "out" else 1
                c0[side, i] -= len(m.idxs)
                mult, ids = _share(m.root_idxs, int(offsets[gid]), groups[gid].total)
                if ids is None:
                    full_rows[side].append((i, gid, mult))
                else:
                    part_rows[side].append((i, ids))
            # Depthwise (and BN-like) layers cost per output channel; their inputs are the same channels.
            uses_in[i] = dense
            scale = n_out * n_in if dense else n_out
            flops_unit[i] = base_flops / scale
            weight_unit[i] = (own - bias) / scale
            per_out[i] = bias / n_out
        params_before = sum(p.numel() for p in model.parameters())
        full = []
        part = []
        for side in (0, 1):
            rows = full_rows[side]
            full.append(tuple(np.array([r[k] for r in rows], dtype=np.int64) for k in range(3)))
            prow = part_rows[side]
            if prow:
                layer = np.concatenate([np.full(len(ids), li, dtype=np.int64) for li, ids in prow])
                ids = np.concatenate([ids for _, ids in prow])
            else:
                layer = ids = np.zeros(0, dtype=np.int64)
            part.append((layer, ids))
        return cls(
            names=names,
            c0=c0,
            full=full,
            part=part,
            flops_unit=flops_unit,
            weight_unit=weight_unit,
            per_out=per_out,
            uses_in=uses_in,
            const_params=params_before - modelled_params,
            const_flops=flops_total - modelled_flops,
            params_before=params_before,
            flops_before=flops_total,
        )

    def kept_channels(self, counts: np.ndarray, kept_mask: np.ndarray) -> np.ndarray:
        """(2, L) kept [out, in] channels of every modelled layer."""
        L = len(self.names)
        kept = self.c0.astype(np.float64)
        for side in (0, 1):
            layer, gid, mult = self.full[side]
            if layer.size:
                kept[side] += np.bincount(layer, weights=counts[gid] * mult, minlength=L)
            layer, ids = self.part[side]
            if layer.size:
                kept[side] += np.bincount(layer, weights=kept_mask[ids], minlength=L)
        return kept

    def evaluate(self, counts: np.ndarray, kept_mask: np.ndarray) -> tuple[int, int]:
        """(params, FLOPs) of the model after keeping `counts` channels per group (`kept_mask` per channel)."""
        out, inp = self.kept_channels(counts, kept_mask)
        scale = np.where(self.uses_in, out * inp, out)
        params = float(self.weight_unit @ scale + self.per_out @ out) + self.const_params
        flops = float(self.flops_unit @ scale) + self.const_flops
        return int(round(params)), int(round(flops))
