"""The one-time, model-dependent part of planning: groups, per-channel scores sorted once, costs.

`plan_from_inputs` then recomputes a plan with numpy only, fast enough for every key press.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from engine.errors import PruneError
from engine.slim.cost import CostModel
from engine.slim.gamma import GammaStats, gamma_stats
from engine.slim.groups import SCORES, ChannelGroup, group_scores, groups_from_trace
from engine.slim.trace import Progress, TraceBudget, build_trace, resolve_input_shape


@dataclass
class ScoreArrays:
    """Scores of all groups' channels concatenated, with their within-group order, for one score kind."""

    scores: np.ndarray  # (N,) float32; +inf on groups that are never pruned
    order: np.ndarray  # (N,) local channel index, each group's slice sorted best first
    rank: np.ndarray  # (N,) 0 = best channel of its group
    sorted_prunable: np.ndarray  # ascending scores of the prunable channels (a unit counts `width` times)


@dataclass
class PlanInputs:
    """Everything `plan_from_inputs` needs, computed once from a model (see `precompute`).

    Arrays run over units (see engine/slim/groups.py): a unit is one channel of each layer of its
    group, or `width` channels where the model ties them.
    """

    groups: list[ChannelGroup]
    input_shape: tuple[int, ...]
    cost: CostModel
    gammas: dict[str, np.ndarray]
    score: str = "max"
    offsets: np.ndarray = field(init=False)  # (G + 1,) start of each group in the concatenation
    totals: np.ndarray = field(init=False)  # units per group
    widths: np.ndarray = field(init=False)  # channels per unit, per group
    prunable: np.ndarray = field(init=False)
    unit_ok: np.ndarray = field(init=False)  # (N,) unit of a prunable group that may be cut
    unit_width: np.ndarray = field(init=False)  # (N,)
    group_of: np.ndarray = field(init=False)  # (N,) group id of each unit
    # groups whose layers hold only some of the units (a concat's branches): each layer's units,
    # so a plan never empties one layer while the group keeps others
    partial: list[tuple[int, list[tuple[str, np.ndarray]]]] = field(init=False, repr=False)
    _arrays: dict[str, ScoreArrays] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.totals = np.array([g.total for g in self.groups], dtype=np.int64)
        self.widths = np.array([g.width for g in self.groups], dtype=np.int64)
        self.offsets = np.r_[0, np.cumsum(self.totals)].astype(np.int64)
        self.prunable = np.array([g.prunable for g in self.groups], dtype=bool)
        self.group_of = np.repeat(np.arange(len(self.groups)), self.totals)
        self.unit_width = np.repeat(self.widths, self.totals)
        fixed = [g.fixed if g.fixed.size == g.total else np.zeros(g.total, bool) for g in self.groups]
        self.unit_ok = np.repeat(self.prunable, self.totals) & ~(np.concatenate(fixed) if fixed else np.zeros(0, bool))
        self.partial = []
        for g in self.groups:
            if not g.prunable:
                continue
            layers = [(m.name, np.unique(m.root_idxs)) for m in g.members if m.side == "out"]
            layers = [(name, units) for name, units in [*layers, *g.parts] if units.size < g.total]
            if layers:
                self.partial.append((g.id, layers))
        self.arrays(self.score)

    @property
    def n_channels(self) -> int:
        return int(self.offsets[-1])

    def arrays(self, score: str | None = None) -> ScoreArrays:
        """Score arrays for `score` ('max', 'mean', 'l2'), computed on first use and cached."""
        score = score or self.score
        if score not in self._arrays:
            parts = [
                group_scores(g, self.gammas, score)
                if g.prunable
                else np.full(g.total, np.inf, dtype=np.float32)
                for g in self.groups
            ]
            self._arrays[score] = self.from_scores(parts)
        return self._arrays[score]

    def from_scores(self, parts: Sequence[np.ndarray]) -> ScoreArrays:
        scores = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        # One global sort keyed by (group, -score) gives every group's best-first order at once;
        # lexsort is stable, so ties keep the lower channel index first.
        glob = np.lexsort((-scores, self.group_of))
        order = glob - self.offsets[self.group_of[glob]]
        rank = np.empty_like(glob)
        rank[glob] = np.arange(glob.size) - self.offsets[self.group_of[glob]]
        ok = self.unit_ok
        return ScoreArrays(scores, order, rank, np.sort(np.repeat(scores[ok], self.unit_width[ok])))


def precompute(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    score: str = "max",
    stats: GammaStats | None = None,
    budget: TraceBudget | None = None,
    progress: Progress | None = None,
) -> PlanInputs:
    """Trace `model` once: gamma statistics, coupled groups (honouring `default_ignore`) and costs.

    `budget` bounds the trace (time, memory); `progress(done, total, where)` hears about it.
    """
    if score not in SCORES:
        raise PruneError(f"score '{score}' is unknown: use one of {', '.join(SCORES)}")
    stats = stats if stats is not None else gamma_stats(model)
    shape = resolve_input_shape(model, input_shape)
    trace = build_trace(model, shape, budget=budget, progress=progress)
    groups = groups_from_trace(trace, model)
    if not groups:
        raise PruneError(f"{type(model).__name__} has no conv or linear layer whose channels can be pruned")
    totals = np.array([g.total for g in groups], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(totals)].astype(np.int64)
    counted = (trace.flops, trace.flops_of) if tuple(trace.input_shape) == tuple(shape) else None  # else scaled
    cost = CostModel.build(model, groups, offsets, shape, flops=counted)
    return PlanInputs(groups, shape, cost, dict(stats.gammas), score)
