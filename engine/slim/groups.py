"""Coupled channel groups: layers that must lose the same channels, found with torch_pruning's DepGraph.

A group is rooted at a conv (or linear) and holds every layer whose channels are tied to the
root's output channels: its BatchNorm, the convs summed with it by a residual add, the slices of
a concat that follows it, depthwise convs (in == out) and the input channels of its consumers.
Channel indices are kept in the root's coordinates ("root_idxs"), so one score vector and one
kept-index list per group describe the cut of every member.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch_pruning as tp
from torch import nn

from engine.errors import PruneError
from engine.slim.trace import build_graph, resolve_input_shape

SCORES = ("max", "mean", "l2")


def layer_kind(module: object) -> str:
    """'conv', 'linear', 'bn' or 'other' (any other layer whose channels torch_pruning cuts)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "bn"
    return "other"


def is_depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    return conv.groups == conv.out_channels == conv.in_channels and conv.out_channels > 1


@dataclass
class Member:
    """One layer's share of a group: which of its channels ('out' or 'in' side) follow which root channels."""

    name: str
    kind: str
    side: str
    idxs: np.ndarray  # channel index in the layer
    # the root channel each of those follows (repeats: concat of one tensor, flatten)
    root_idxs: np.ndarray


@dataclass
class ChannelGroup:
    """Channels that are cut together. `prunable` is False for groups slimming must leave whole."""

    id: int
    root: str
    total: int
    convs: list[str]
    layers: list[str]  # BatchNorm layers whose |gamma| scores the channels
    sizes: dict[str, int]  # output channels of every out-side member before pruning
    members: list[Member] = field(repr=False)
    prunable: bool = True
    reason: str | None = None

    def out_names(self) -> list[str]:
        return [m.name for m in self.members if m.side == "out"]

    def matches(self, patterns: Sequence[str]) -> str | None:
        """The first out-side layer name matching one of `patterns` (fnmatch), else None."""
        for name in self.out_names():
            for pattern in patterns:
                if fnmatch.fnmatchcase(name, pattern):
                    return f"{name} matches ignore pattern '{pattern}'"
        return None


def _member_name(graph: tp.DependencyGraph, module: object) -> str | None:
    name = graph._module2name.get(module)
    return name if name else None


def _group_from_tp(graph: tp.DependencyGraph, gid: int, group: tp.dependency.Group) -> ChannelGroup:
    root_module = group[0].dep.target.module
    root = _member_name(graph, root_module)
    total = int(graph.get_out_channels(root_module))
    members: list[Member] = []
    convs: list[str] = []
    layers: list[str] = []
    sizes: dict[str, int] = {}
    feeds_output = False
    unfollowed: list[str] = []
    grouped: list[str] = []
    loose: list[str] = []
    no_gamma: list[str] = []
    for item in group:
        dep = item.dep
        node = dep.target
        module = node.module
        out_side = graph.is_out_channel_pruning_fn(dep.handler)
        if out_side and not node.outputs:
            feeds_output = True  # every traced node except the model outputs has a consumer
        if isinstance(module, nn.Parameter):
            loose.append(graph._param_to_name.get(module, "a parameter"))
            continue
        name = _member_name(graph, module)
        if name is None:  # concat/add/reshape ops: they carry channels but own no weights
            continue
        kind = layer_kind(module)
        side = "out" if out_side else "in"
        idxs = np.asarray(item.idxs, dtype=np.int64)
        root_idxs = np.asarray(item.root_idxs, dtype=np.int64)
        members.append(Member(name, kind, side, idxs, root_idxs))
        if kind == "conv" and module.groups > 1 and not is_depthwise(module):
            grouped.append(name)
        if side != "out":
            continue
        sizes[name] = int(graph.get_out_channels(module))
        if kind == "bn" and module.weight is None:
            no_gamma.append(name)
        elif kind == "bn":
            layers.append(name)
        elif kind in ("conv", "linear"):
            convs.append(name)
            if not any(isinstance(o.module, nn.modules.batchnorm._BatchNorm) for o in node.outputs):
                unfollowed.append(name)
    g = ChannelGroup(gid, root, total, convs, layers, sizes, members)
    if feeds_output:
        g.prunable, g.reason = False, "its channels are model outputs"
    elif loose:
        g.prunable, g.reason = False, f"parameter {loose[0]} outside any layer is coupled to it"
    elif grouped:
        g.prunable, g.reason = (
            False,
            f"grouped convolution {grouped[0]} (only depthwise is supported)",
        )
    elif not layers:
        g.prunable, g.reason = (
            False,
            (
                f"BatchNorm {no_gamma[0]} has affine=False (no gamma)"
                if no_gamma
                else "no BatchNorm in the group"
            ),
        )
    elif unfollowed:
        g.prunable, g.reason = False, f"{unfollowed[0]} is not followed by BatchNorm"
    else:
        covered = np.zeros(total, dtype=bool)
        for m in members:
            if m.kind == "bn" and m.side == "out" and m.name in layers:
                covered[m.root_idxs] = True
        if not covered.all():
            g.prunable, g.reason = False, f"{int((~covered).sum())} channels have no BatchNorm"
    return g


def find_groups(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    ignore: Sequence[str] = (),
    graph: tp.DependencyGraph | None = None,
) -> list[ChannelGroup]:
    """Every coupled channel group of `model`, in graph order, with `prunable` and `reason` set.

    Groups are left whole when an out-side layer matches the model's `default_ignore` or `ignore`
    (fnmatch patterns), when they reach the model output, lack BatchNorm, or touch a grouped conv.
    """
    if graph is None:
        graph = build_graph(model, resolve_input_shape(model, input_shape))
    patterns = [*getattr(model, "default_ignore", []), *ignore]
    groups: list[ChannelGroup] = []
    roots = (nn.modules.conv._ConvNd, nn.Linear)
    for tp_group in graph.get_all_groups(root_module_types=roots):
        g = _group_from_tp(graph, len(groups), tp_group)
        if g.prunable:
            hit = g.matches(patterns)
            if hit:
                g.prunable, g.reason = False, hit
        groups.append(g)
    if not groups:
        raise PruneError(
            f"{type(model).__name__} has no conv or linear layer whose channels can be pruned"
        )
    return groups


def group_scores(
    group: ChannelGroup, gammas: dict[str, np.ndarray], score: str = "max"
) -> np.ndarray:
    """Per-channel score of `group` (root coordinates) from its BatchNorms' |gamma|.

    'max' and 'mean' over the member BatchNorms; 'l2' is their root mean square, so groups with
    many members (long residual chains) stay comparable with single-conv groups.
    """
    if score not in SCORES:
        raise PruneError(f"score '{score}' is unknown: use one of {', '.join(SCORES)}")
    acc = np.zeros(group.total, dtype=np.float64)
    count = np.zeros(group.total, dtype=np.float64)
    if score == "max":
        acc.fill(-np.inf)
    for m in group.members:
        if m.kind != "bn" or m.side != "out" or m.name not in gammas:
            continue
        g = np.abs(gammas[m.name][m.idxs]).astype(np.float64)
        if score == "max":
            np.maximum.at(acc, m.root_idxs, g)
        elif score == "mean":
            np.add.at(acc, m.root_idxs, g)
        else:
            np.add.at(acc, m.root_idxs, g * g)
        np.add.at(count, m.root_idxs, 1.0)
    if not (count > 0).all():
        missing = [
            m.name
            for m in group.members
            if m.kind == "bn" and m.side == "out" and m.name not in gammas
        ]
        raise PruneError(
            f"group {group.id} (root {group.root}) has channels without |gamma|"
            + (f": no statistics for {', '.join(missing)}" if missing else "")
        )
    if score == "mean":
        acc /= count
    elif score == "l2":
        acc = np.sqrt(acc / count)
    return acc.astype(np.float32)
