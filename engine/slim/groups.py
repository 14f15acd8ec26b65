"""Coupled channel groups: layers whose channels are cut together, from one channel trace.

A group holds the units (classes of atoms cut together, see engine/slim/atoms.py) that the same
layers' output channels hold: a conv, its BatchNorm, the convs added to it by a residual, the
branches of a concat that a BatchNorm or depthwise conv spans, the BatchNorms of pre-activation
blocks reading the same stream, an SE block's excitation conv. Channel indices of a group are unit
indices ("root_idxs"), so one score vector and one kept-index list per group describe the cut of
every member. A unit is usually one channel of each member; it is several when the model needs
them cut together (the same position in every group of a grouped conv, the two halves of an even
split): `width` is then the channels each unit stands for.

Some units can never be cut (`fixed`): channels that reach the model output, are reduced over,
sliced at fixed positions, or have no BatchNorm to score them (a BatchNorm is known by what it
computes, see engine/slim/gamma.py `is_batch_norm`). A group is prunable when any of its
units is not fixed; the others are always kept.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.errors import PruneError
from engine.slim.atoms import Atoms, compact
from engine.slim.trace import (
    Progress,
    Trace,
    TraceBudget,
    build_trace,
    layer_kind,
    resolve_input_shape,
)

SCORES = ("max", "mean", "l2")
__all__ = ["SCORES", "ChannelGroup", "Member", "find_groups", "group_scores", "groups_from_trace", "is_depthwise", "layer_kind"]


def is_depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    return conv.groups == conv.out_channels == conv.in_channels and conv.out_channels > 1


@dataclass
class Member:
    """One layer's share of a group: which of its channels ('out' or 'in' side) follow which units."""

    name: str
    kind: str  # conv | linear | bn | select | param
    side: str
    idxs: np.ndarray  # channel index in the layer (for a parameter: index along `dim`)
    root_idxs: np.ndarray  # the unit each of those channels belongs to (repeats are normal)
    dim: int = 0  # a parameter's dimension that follows the channels


@dataclass
class ChannelGroup:
    """Units cut together. `prunable` is False for groups slimming must leave whole."""

    id: int
    root: str
    total: int  # units
    convs: list[str]
    layers: list[str]  # BatchNorm layers whose |gamma| scores the units
    sizes: dict[str, int]  # channels of every out-side member before pruning
    members: list[Member] = field(repr=False)
    prunable: bool = True
    reason: str | None = None
    width: int = 1  # channels per unit
    fixed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)  # units never cut
    unit_reasons: list[str | None] = field(default_factory=list, repr=False)
    atoms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # class root per unit
    note: str | None = None  # why some units of a prunable group stay
    # units that must keep at least one channel between them besides each layer's: the parts of a
    # slice or split by a count attribute (engine/slim/trace.py `Sized`)
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list, repr=False)

    def out_names(self) -> list[str]:
        return [m.name for m in self.members if m.side == "out"]

    def matches(self, patterns: Sequence[str]) -> str | None:
        """The first out-side layer name matching one of `patterns` (fnmatch), else None."""
        for name in self.out_names():
            for pattern in patterns:
                if fnmatch.fnmatchcase(name, pattern):
                    return f"{name} matches ignore pattern '{pattern}'"
        return None

    @property
    def channels(self) -> int:
        return self.total * self.width


@dataclass
class _Source:
    """An out-side holder of channels: a layer's outputs, a BatchNorm, a parameter slab."""

    name: str
    kind: str
    order: int
    roots: np.ndarray
    dim: int = 0
    affine: bool = True
    producer: bool = False


def _sources(trace: Trace) -> tuple[list[_Source], dict[int, str]]:
    atoms = trace.atoms
    frozen = atoms.class_reasons()
    sources: list[_Source] = []
    for layer in trace.layers.values():
        if layer.out is None:
            continue
        kind = layer.kind
        affine = not (kind == "bn" and layer.module.weight is None)
        sources.append(_Source(layer.name, kind, layer.order, atoms.find(layer.out), 0, affine, kind in ("conv", "linear")))
    units = np.unique(np.concatenate([s.roots for s in sources])) if sources else np.zeros(0, np.int64)
    units = units[units >= 0]
    for use in trace.params.values():
        roots = atoms.find(use.atoms.ravel()).reshape(use.atoms.shape)
        inside = np.isin(roots, units)
        if not inside.any():
            continue
        lab = compact(torch.from_numpy(roots))
        vary = lab.varying()
        if len(vary) == 1:
            row = lab.c.reshape(-1).numpy().copy()
            row[~np.isin(row, units)] = -1
            sources.append(_Source(use.name, "param", use.order, row, vary[0]))
            continue
        why = (f"parameter {use.name} would lose all its elements" if not vary else
               f"parameter {use.name} follows them along {len(vary)} dimensions at once")
        for r in np.unique(roots[inside]):
            frozen.setdefault(int(r), why)
    sources.sort(key=lambda s: s.order)
    return sources, frozen


class _Units:
    """Every unit (class root held by an out-side source): its group and its index in the group."""

    def __init__(self, sources: list[_Source]) -> None:
        self.roots = np.unique(np.concatenate([s.roots[s.roots >= 0] for s in sources]))
        links = Atoms()
        links.new(self.roots.size)
        seq, seq_src = [], []
        for i, s in enumerate(sources):
            ids = self.lookup(s.roots)
            ids = ids[ids >= 0]
            if ids.size > 1:
                links.union(np.repeat(ids[:1], ids.size - 1), ids[1:])
            seq.append(ids)
            seq_src.append(np.full(ids.size, i))
        comp = links.find(np.arange(self.roots.size))
        order = np.concatenate(seq)
        # groups in the order of their first source; units in order of first appearance
        first_src = np.full(self.roots.size, len(sources))
        np.minimum.at(first_src, order, np.concatenate(seq_src))
        comp_first = np.full(self.roots.size, len(sources))
        np.minimum.at(comp_first, comp, first_src)
        keys = np.unique(comp_first[comp])
        self.group = np.searchsorted(keys, comp_first[comp])
        self.n_groups = keys.size
        _, first = np.unique(order, return_index=True)
        appear = order[np.sort(first)]
        g = self.group[appear]
        by_group = np.argsort(g, kind="stable")
        gs = g[by_group]
        starts = np.r_[0, np.flatnonzero(np.diff(gs)) + 1]
        rank = np.arange(gs.size) - np.repeat(starts, np.diff(np.r_[starts, gs.size]))
        self.local = np.zeros(self.roots.size, dtype=np.int64)
        self.local[appear[by_group]] = rank
        self.sizes = np.bincount(g, minlength=self.n_groups)

    def lookup(self, roots: np.ndarray) -> np.ndarray:
        """Index of each root in `self.roots`, -1 where it is not a unit."""
        roots = np.asarray(roots, dtype=np.int64)
        if not self.roots.size:
            return np.full(roots.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.roots, roots), self.roots.size - 1)
        return np.where((roots >= 0) & (self.roots[pos] == roots), pos, -1)


def groups_from_trace(trace: Trace, model: nn.Module | None = None, ignore: Sequence[str] = ()) -> list[ChannelGroup]:
    """Every coupled channel group found by `trace`, in the order their first layer ran."""
    layout = _layout(trace)
    if layout is None:
        return []
    srcs, members, unit_atoms, frozen, parts = layout
    patterns = [*getattr(model, "default_ignore", []), *ignore] if model is not None else list(ignore)
    groups = [_group(g, srcs[g], members[g], unit_atoms[g], frozen, patterns) for g in range(len(srcs))]
    for g, part in parts:
        groups[g].parts.append(part)
    return groups


def _layout(trace: Trace) -> tuple | None:
    """What groups are made of, from the trace alone (no ignore patterns): worked out once per trace,
    since planning and cutting the same model both ask for it."""
    if trace.layout is not None:
        return trace.layout or None
    sources, frozen = _sources(trace)
    if not sources:
        trace.layout = ()
        return None
    units = _Units(sources)
    n = units.n_groups
    members: list[list[Member]] = [[] for _ in range(n)]
    srcs: list[list[_Source]] = [[] for _ in range(n)]
    for s in sources:
        ids = units.lookup(s.roots)
        pos = np.flatnonzero(ids >= 0)
        if not pos.size:
            continue
        g = int(units.group[ids[pos[0]]])
        members[g].append(Member(s.name, s.kind, "out", pos, units.local[ids[pos]], s.dim))
        srcs[g].append(s)
    for layer in trace.layers.values():
        if layer.inp is None:
            continue
        ids = units.lookup(trace.atoms.find(layer.inp))
        pos = np.flatnonzero(ids >= 0)
        if not pos.size:
            continue
        gids = units.group[ids[pos]]
        for g in np.unique(gids):
            sel = pos[gids == g]
            members[int(g)].append(Member(layer.name, layer.kind, "in", sel, units.local[ids[sel]]))
    unit_atoms = [np.zeros(int(units.sizes[g]), dtype=np.int64) for g in range(n)]
    for u, root in enumerate(units.roots):
        unit_atoms[int(units.group[u])][units.local[u]] = root
    parts = []
    for what, atoms in trace.parts:
        ids = units.lookup(trace.atoms.find(atoms))
        ids = ids[ids >= 0]
        gids = units.group[ids]
        parts += [(int(g), (what, np.unique(units.local[ids[gids == g]]))) for g in np.unique(gids)]
    trace.layout = (srcs, members, unit_atoms, frozen, parts)
    return trace.layout


def _group(gid: int, sources: list[_Source], members: list[Member], unit_atoms: np.ndarray,
           frozen: dict[int, str], patterns: Sequence[str]) -> ChannelGroup:
    total = unit_atoms.size
    sizes: dict[str, int] = {}
    convs: list[str] = []
    layers: list[str] = []
    no_gamma: list[str] = []
    covered = np.zeros(total, dtype=bool)
    mult = np.zeros(total, dtype=np.int64)
    any_producer = any(s.producer for s in sources)
    outs = [m for m in members if m.side == "out"]
    for s, m in zip(sources, outs, strict=True):
        sizes[s.name] = int(s.roots.size)
        if s.producer:
            convs.append(s.name)
        if s.kind == "bn":
            if s.affine:
                layers.append(s.name)
                covered[m.root_idxs] = True
            else:
                no_gamma.append(s.name)
        if s.producer or not any_producer:
            mult = np.maximum(mult, np.bincount(m.root_idxs, minlength=total))
    reasons: list[str | None] = []
    for u, atom in enumerate(unit_atoms):
        why = frozen.get(int(atom))
        if why is None and not covered[u]:
            why = (f"BatchNorm {no_gamma[0]} has affine=False (no gamma)" if no_gamma
                   else "no BatchNorm scores them")
        reasons.append(why)
    fixed = np.array([r is not None for r in reasons], dtype=bool)
    width = int(mult.max()) if total and mult.min() == mult.max() and mult.max() > 0 else 1
    root = convs[0] if convs else sources[0].name
    g = ChannelGroup(gid, root, total, convs, layers, sizes, members, width=width, fixed=fixed,
                     unit_reasons=reasons, atoms=unit_atoms)
    hit = g.matches(patterns)
    if hit:
        g.prunable, g.reason = False, hit
    elif fixed.all():
        g.prunable, g.reason = False, Counter(reasons).most_common(1)[0][0]
    elif fixed.any():
        main, _ = Counter(r for r in reasons if r).most_common(1)[0]
        g.note = f"{int(fixed.sum()) * width} of {total * width} channels stay: {main}"
    return g


def find_groups(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    ignore: Sequence[str] = (),
    trace: Trace | None = None,
    *,
    budget: TraceBudget | None = None,
    progress: Progress | None = None,
) -> list[ChannelGroup]:
    """Every coupled channel group of `model`, in the order their first layer runs.

    Groups are left whole when an out-side layer matches the model's `default_ignore` or `ignore`
    (fnmatch patterns), or when none of their channels can be cut (each group says why).
    """
    if trace is None:
        trace = build_trace(model, resolve_input_shape(model, input_shape), budget=budget, progress=progress)
    groups = groups_from_trace(trace, model, ignore)
    if not groups:
        raise PruneError(
            f"{type(model).__name__} has no conv or linear layer whose channels can be pruned"
        )
    return groups


def group_scores(
    group: ChannelGroup, gammas: dict[str, np.ndarray], score: str = "max"
) -> np.ndarray:
    """Per-unit score of `group` from its BatchNorms' |gamma|; +inf for units that are never cut.

    'max' and 'mean' over the member BatchNorm channels of a unit; 'l2' is their root mean
    square, so groups with many members (long residual chains) stay comparable with single-conv
    groups.
    """
    if score not in SCORES:
        raise PruneError(f"score '{score}' is unknown: use one of {', '.join(SCORES)}")
    acc = np.zeros(group.total, dtype=np.float64)
    count = np.zeros(group.total, dtype=np.float64)
    if score == "max":
        acc.fill(-np.inf)
    scored = np.zeros(group.total, dtype=bool)
    for m in group.members:
        if m.kind != "bn" or m.side != "out" or m.name not in group.layers:
            continue
        scored[m.root_idxs] = True
        if m.name not in gammas:
            continue
        g = np.abs(gammas[m.name][m.idxs]).astype(np.float64)
        if score == "max":
            np.maximum.at(acc, m.root_idxs, g)
        elif score == "mean":
            np.add.at(acc, m.root_idxs, g)
        else:
            np.add.at(acc, m.root_idxs, g * g)
        np.add.at(count, m.root_idxs, 1.0)
    missing_units = scored & (count == 0)
    if missing_units.any():
        missing = [m.name for m in group.members if m.kind == "bn" and m.side == "out"
                   and m.name in group.layers and m.name not in gammas]
        raise PruneError(
            f"group {group.id} (root {group.root}) has channels without |gamma|"
            + (f": no statistics for {', '.join(missing)}" if missing else "")
        )
    seen = count > 0
    if score == "mean":
        acc[seen] /= count[seen]
    elif score == "l2":
        acc[seen] = np.sqrt(acc[seen] / count[seen])
    acc[~seen] = np.inf
    if group.fixed.size:
        acc[group.fixed] = np.inf
    return acc.astype(np.float32)
