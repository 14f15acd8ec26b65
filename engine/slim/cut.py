"""Physically removing channels: each traced layer (and cut parameter) loses exactly its cut channels."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from engine.errors import PruneError
from engine.slim.groups import ChannelGroup
from engine.slim.trace import Sized, Trace


def cut_atoms(groups: Iterable[ChannelGroup], cut: dict[int, np.ndarray]) -> np.ndarray:
    """The class roots of the units `cut` ({group id: unit indices}) removes."""
    by_id = {g.id: g for g in groups}
    parts = [by_id[gid].atoms[np.asarray(units, dtype=np.int64)] for gid, units in cut.items() if len(units)]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def kept(trace: Trace, slots: np.ndarray | None, atoms: np.ndarray) -> np.ndarray | None:
    """Per channel of a layer side: True where it stays."""
    if slots is None:
        return None
    return ~np.isin(trace.atoms.find(slots), atoms)


class Undo:
    """What a cut replaced (tensors, channel counts), to put the model back exactly as it was."""

    def __init__(self) -> None:
        self.steps: list[tuple[nn.Module, str, str, object]] = []  # (owner, kind, name, old value)

    def restore(self) -> None:
        for owner, kind, name, old in reversed(self.steps):
            if kind == "param":
                owner._parameters[name] = old
            elif kind == "buffer":
                owner._buffers[name] = old
            else:
                setattr(owner, name, old)
        self.steps.clear()


_undo: Undo | None = None  # the log of the cut in progress


def cut_model(model: nn.Module, trace: Trace, groups: list[ChannelGroup], cut: dict[int, np.ndarray],
              undo: Undo | None = None) -> None:
    """Remove the units `cut` names from every layer and parameter holding them, in place.

    With `undo`, every replaced tensor and changed channel count is logged there."""
    global _undo
    _undo = undo
    try:
        _cut_model(model, trace, groups, cut)
    finally:
        _undo = None


def _cut_model(model: nn.Module, trace: Trace, groups: list[ChannelGroup], cut: dict[int, np.ndarray]) -> None:
    atoms = cut_atoms(groups, cut)
    for layer in trace.layers.values():
        keep_out = kept(trace, layer.out, atoms)
        keep_in = kept(trace, layer.inp, atoms)
        if all(k is None or k.all() for k in (keep_out, keep_in)):
            continue
        m = layer.module
        if layer.kind == "conv":
            _conv(layer.name, m, keep_out, keep_in)
        elif layer.kind == "linear":
            _linear(m, keep_out, keep_in)
        elif layer.kind == "bn":
            _batch_norm(m, keep_out)
        elif layer.kind == "select":
            _replace(m, "indexes", m.indexes[torch.from_numpy(np.flatnonzero(keep_out)).to(m.indexes.device)])
    rows: dict[str, tuple[int, list[np.ndarray]]] = {}  # a parameter may hold units of several groups
    by_id = {g.id: g for g in groups}
    for gid, units in cut.items():
        for member in by_id[gid].members if len(units) else []:
            if member.kind == "param":
                gone = member.idxs[np.isin(member.root_idxs, units)]
                rows.setdefault(member.name, (member.dim, []))[1].append(gone)
    for name, (dim, gone) in rows.items():
        _param(model, name, dim, np.concatenate(gone))
    for sized in trace.sized:
        _count(model, trace, sized, atoms)
    sync_widths(model)


def _count(model: nn.Module, trace: Trace, sized: Sized, atoms: np.ndarray) -> None:
    """A count attribute a module slices or splits by becomes the kept count of what it covers."""
    module = model.get_submodule(sized.module)
    counts = [int(kept(trace, part, atoms).sum()) for part in sized.parts]
    old = getattr(module, sized.attr)
    value = type(old)(counts) if sized.as_list else counts[0]
    if value != old:
        _set(module, **{sized.attr: value})


def sync_widths(model: nn.Module) -> None:
    """Channel counts a model keeps in plain attributes follow the layers they describe.

    `width_attributes` ({module: {attribute: [layer, divisor]}}, plain data) names them: e.g. a block
    splitting its conv's output with `split((self.c, self.c))` declares {"c": ["<block>.cv1.conv", 2]},
    and after a cut `c` is that conv's output channels / 2.
    """
    for owner, attrs in (getattr(model, "width_attributes", None) or {}).items():
        module = model.get_submodule(owner)
        for attr, (layer, divisor) in attrs.items():
            width = _width(model.get_submodule(layer)) // int(divisor)
            if getattr(module, attr, None) != width:
                _set(module, **{attr: width})


def _width(layer: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(layer, attr, None), int):
            return int(getattr(layer, attr))
    raise PruneError(f"width_attributes names {type(layer).__name__}, which has no channel count")


def _index(t: torch.Tensor, dim: int, keep: np.ndarray) -> torch.Tensor:
    return t.index_select(dim, torch.from_numpy(np.flatnonzero(keep)).to(t.device)).contiguous()


def _replace(owner: nn.Module, attr: str, value: torch.Tensor) -> None:
    """`value` is a fresh tensor (index_select copies): it becomes the parameter or buffer `attr`."""
    old = getattr(owner, attr)
    if isinstance(old, nn.Parameter):
        if _undo is not None:
            _undo.steps.append((owner, "param", attr, old))
        owner._parameters[attr] = nn.Parameter(value.detach(), requires_grad=old.requires_grad)
    else:
        if _undo is not None:
            _undo.steps.append((owner, "buffer", attr, old))
        owner._buffers[attr] = value.detach()


def _set(module: nn.Module, **counts: int) -> None:
    for name, value in counts.items():
        if _undo is not None:
            _undo.steps.append((module, "attr", name, getattr(module, name)))
        setattr(module, name, value)


def _conv(name: str, m: nn.modules.conv._ConvNd, keep_out: np.ndarray, keep_in: np.ndarray) -> None:
    g = m.groups
    cin, cout = m.in_channels, m.out_channels
    cpg, opg = cin // g, cout // g
    w = m.weight.detach()
    rows, cols = (keep_in, keep_out) if m.transposed else (keep_out, keep_in)  # weight dim 0 / dim 1 follow
    groups = g
    if g == 1:
        w = _index(_index(w, 0, rows), 1, cols)
    elif cpg == 1:  # one input channel per group: whole groups go
        kout = keep_out.reshape(g, opg)
        if not np.array_equal(kout.any(1), keep_in) or not np.array_equal(kout.any(1), kout.all(1)):
            raise PruneError(f"cannot cut {name}: a depthwise conv must lose whole groups (input with its outputs)")
        w = _index(w, 0, keep_in if m.transposed else keep_out)
        groups = int(keep_in.sum())
    else:
        kin, kout = keep_in.reshape(g, cpg), keep_out.reshape(g, opg)
        if not ((kin == kin[0]).all() and (kout == kout[0]).all()):
            raise PruneError(f"cannot cut {name}: a grouped conv must lose the same positions in every group")
        w = _index(_index(w, 0, rows), 1, (kout if m.transposed else kin)[0])
    _replace(m, "weight", w)
    if m.bias is not None:
        _replace(m, "bias", _index(m.bias.detach(), 0, keep_out))
    _set(m, in_channels=int(keep_in.sum()), out_channels=int(keep_out.sum()), groups=groups)


def _linear(m: nn.Linear, keep_out: np.ndarray, keep_in: np.ndarray) -> None:
    _replace(m, "weight", _index(_index(m.weight.detach(), 0, keep_out), 1, keep_in))
    if m.bias is not None:
        _replace(m, "bias", _index(m.bias.detach(), 0, keep_out))
    _set(m, out_features=int(keep_out.sum()), in_features=int(keep_in.sum()))


def _batch_norm(m: nn.Module, keep: np.ndarray) -> None:
    for attr in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(m, attr, None)
        if t is not None:
            _replace(m, attr, _index(t.detach(), 0, keep))
    if isinstance(getattr(m, "num_features", None), int):  # a frozen BatchNorm may not keep it
        _set(m, num_features=int(keep.sum()))


def _param(model: nn.Module, name: str, dim: int, gone: np.ndarray) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    t = getattr(owner, attr)
    keep = np.ones(t.shape[dim], dtype=bool)
    keep[gone] = False
    _replace(owner, attr, _index(t.detach(), dim, keep))
