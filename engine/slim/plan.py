"""PrunePlan: which channels of each coupled group are kept. Plain data, JSON round-trippable.

Rules (Liu et al. 2017, with guards):
- `percent` p in [0, 1): the global p-quantile of the scores of all prunable channels is the
  threshold (the value at sorted position int(n * p)); channels scoring below it are cut.
- `threshold`: an absolute |gamma| threshold instead. Exactly one of the two.
- `overrides` {pattern: {"threshold": x} | {"keep": ratio}} replace the rule for groups with a
  layer matching the fnmatch pattern.
- `min_keep` (count, or fraction of the group in (0, 1]) is the floor: a group below it keeps its
  best min_keep channels and is marked clamped, with a warning. min_keep=0 may not empty a group.
- `round_to` R rounds each kept count up to a multiple of R (capped at the group size), adding
  the next best channels.
Kept channels are always a group's best-scoring ones. Groups count in units (engine/slim/groups.py):
`kept_idxs` are unit indices, a unit stands for `width` channels, and units that can never be cut
are always kept. When the plan cuts less than half of what `percent` asks, a warning says why.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from engine.errors import PruneError
from engine.slim.groups import SCORES
from engine.slim.inputs import PlanInputs, precompute
from engine.slim.trace import Progress

PLAN_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before units; kept_idxs were root-conv channels (see apply.py)


@dataclass
class PlanGroup:
    """One coupled group's decision. `kept_idxs` are root-conv channel indices, ascending."""

    id: int
    root: str
    layers: list[str]
    convs: list[str]
    total: int
    kept_idxs: list[int]
    threshold: float | None
    clamped: bool
    ignored: bool
    reason: str | None
    override: dict[str, float] | None
    sizes: dict[str, int]
    width: int = 1  # channels per unit

    @property
    def kept(self) -> int:
        return len(self.kept_idxs)

    def pruned_idxs(self) -> list[int]:
        kept = set(self.kept_idxs)
        return [i for i in range(self.total) if i not in kept]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "root": self.root,
            "layers": list(self.layers),
            "convs": list(self.convs),
            "total": self.total,
            "kept": self.kept,
            "kept_idxs": list(self.kept_idxs),
            "threshold": self.threshold,
            "clamped": self.clamped,
            "ignored": self.ignored,
            "reason": self.reason,
            "override": None if self.override is None else dict(self.override),
            "sizes": dict(self.sizes),
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlanGroup:
        try:
            g = cls(
                id=int(d["id"]),
                root=str(d["root"]),
                layers=[str(x) for x in d["layers"]],
                convs=[str(x) for x in d["convs"]],
                total=int(d["total"]),
                kept_idxs=[int(i) for i in d["kept_idxs"]],
                threshold=None if d["threshold"] is None else float(d["threshold"]),
                clamped=bool(d["clamped"]),
                ignored=bool(d["ignored"]),
                reason=d.get("reason"),
                override=None if d.get("override") is None else dict(d["override"]),
                sizes={str(k): int(v) for k, v in d["sizes"].items()},
                width=int(d.get("width", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PruneError(
                f"plan group {d.get('id', '?')} is malformed: {type(exc).__name__}: {exc}"
            ) from exc
        idxs = g.kept_idxs
        if not idxs or idxs != sorted(set(idxs)) or idxs[0] < 0 or idxs[-1] >= g.total:
            raise PruneError(
                f"plan group {g.id} (root {g.root}): kept_idxs must be non-empty, ascending, unique "
                f"and within 0..{g.total - 1}"
            )
        return g


@dataclass
class PrunePlan:
    input_shape: list[int]
    groups: list[PlanGroup]
    options: dict[str, Any]
    totals: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION

    @property
    def pruned_groups(self) -> list[PlanGroup]:
        return [g for g in self.groups if g.kept < g.total]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "input_shape": list(self.input_shape),
            "options": _jsonable(self.options),
            "totals": dict(self.totals),
            "warnings": list(self.warnings),
            "groups": [g.to_dict() for g in self.groups],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrunePlan:
        if not isinstance(d, Mapping) or "groups" not in d:
            raise PruneError("not a prune plan: expected a mapping with 'groups' (a plan.json)")
        version = d.get("version")
        if version not in READABLE_VERSIONS:
            raise PruneError(
                f"prune plan version {version!r} is not supported (expected {PLAN_VERSION})"
            )
        return cls(
            input_shape=[int(s) for s in d["input_shape"]],
            groups=[PlanGroup.from_dict(g) for g in d["groups"]],
            options=dict(d.get("options", {})),
            totals={str(k): int(v) for k, v in d.get("totals", {}).items()},
            warnings=[str(w) for w in d.get("warnings", [])],
            version=version,
        )


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_options(percent, threshold, min_keep, round_to, score) -> tuple:
    """Validated options as plain Python numbers (numpy scalars accepted)."""
    if (percent is None) == (threshold is None):
        raise PruneError(
            "give exactly one of percent (global fraction, e.g. 0.5) or threshold (|gamma|, e.g. 0.01)"
        )
    if percent is not None:
        if not (_is_real(percent) and 0.0 <= percent < 1.0):
            raise PruneError(
                f"percent {percent!r} is outside [0, 1): use e.g. 0.5 to cut the lowest-scoring half"
            )
        percent = float(percent)
    if threshold is not None:
        if not (_is_real(threshold) and math.isfinite(threshold) and threshold >= 0):
            raise PruneError(
                f"threshold {threshold!r} must be a finite |gamma| value >= 0, e.g. 0.01"
            )
        threshold = float(threshold)
    if _is_int(min_keep):
        if min_keep < 0:
            raise PruneError(f"min_keep {min_keep} must be >= 0")
        min_keep = int(min_keep)
    elif _is_real(min_keep):
        if not 0.0 < min_keep <= 1.0:
            raise PruneError(
                f"min_keep {min_keep} as a fraction must be in (0, 1]; use an int for a count"
            )
        min_keep = float(min_keep)
    else:
        raise PruneError(
            f"min_keep {min_keep!r} must be a channel count (int >= 0) or a fraction in (0, 1]"
        )
    if not _is_int(round_to) or round_to < 1:
        raise PruneError(
            f"round_to {round_to!r} must be an int >= 1 (e.g. 8 for tensor-core friendly widths)"
        )
    if score not in SCORES:
        raise PruneError(f"score '{score}' is unknown: use one of {', '.join(SCORES)}")
    return percent, threshold, min_keep, int(round_to)


def _check_override(pattern: str, rule: Any) -> dict[str, float]:
    if (
        not isinstance(rule, Mapping)
        or len(rule) != 1
        or next(iter(rule)) not in ("threshold", "keep")
    ):
        raise PruneError(
            f"override '{pattern}': {rule!r} must be {{'threshold': x}} or {{'keep': ratio}}"
        )
    key, value = next(iter(rule.items()))
    if not _is_real(value) or not math.isfinite(value):
        raise PruneError(f"override '{pattern}': {key} {value!r} must be a number")
    if key == "keep" and not 0.0 <= value <= 1.0:
        raise PruneError(f"override '{pattern}': keep {value} must be a ratio in [0, 1]")
    if key == "threshold" and value < 0:
        raise PruneError(f"override '{pattern}': threshold {value} must be >= 0")
    return {key: float(value)}


def _label(g) -> str:
    names = g.layers or g.convs or [g.root]
    more = f" +{len(names) - 1}" if len(names) > 1 else ""
    return f"group {g.id} ({names[0]}{more})"


def plan_from_inputs(
    inputs: PlanInputs,
    *,
    percent: float | None = None,
    threshold: float | None = None,
    min_keep: int | float = 1,
    round_to: int = 1,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    ignore: Sequence[str] = (),
    score: str | None = None,
) -> PrunePlan:
    """A plan from precomputed inputs with numpy only (no torch): cheap enough per key press."""
    score = score or inputs.score
    percent, threshold, min_keep, round_to = _check_options(
        percent, threshold, min_keep, round_to, score
    )
    overrides = {str(p): _check_override(str(p), r) for p, r in (overrides or {}).items()}
    arr = inputs.arrays(score)
    groups = inputs.groups
    G = len(groups)
    totals = inputs.totals
    warnings: list[str] = []

    active = inputs.prunable.copy()
    reasons = [g.reason for g in groups]
    if ignore:
        hits = 0
        for g in groups:
            if active[g.id]:
                hit = g.matches(ignore)
                if hit:
                    active[g.id], reasons[g.id] = False, hit
                    hits += 1
        if not hits:
            warnings.append(f"ignore {list(ignore)} matched no prunable group")

    widths = inputs.widths
    ok = inputs.unit_ok & np.repeat(active, totals)
    fixed_g = totals - (np.add.reduceat(ok, inputs.offsets[:-1], dtype=np.int64) if G else np.zeros(0, np.int64))
    if percent is not None:
        if np.array_equal(active, inputs.prunable):
            pool = arr.sorted_prunable
            k = int(pool.size * percent)
            thr = float(pool[k]) if pool.size else -np.inf
        else:
            pool = np.repeat(arr.scores[ok], inputs.unit_width[ok])
            k = int(pool.size * percent)
            thr = float(np.partition(pool, k)[k]) if pool.size else -np.inf
    else:
        thr = float(threshold)

    thr_g = np.where(active, thr, -np.inf)
    keep_g = np.full(G, -1, dtype=np.int64)
    override_of: dict[int, dict[str, float]] = {}
    for pattern, rule in overrides.items():
        matched = [g.id for g in groups if active[g.id] and g.matches([pattern])]
        if not matched:
            warnings.append(f"override '{pattern}' matched no prunable group")
        for gid in matched:
            override_of[gid] = rule
            if "threshold" in rule:
                thr_g[gid], keep_g[gid] = rule["threshold"], -1
            else:
                keep_g[gid] = math.ceil(rule["keep"] * int(totals[gid]) - 1e-9)

    mask = arr.scores >= np.repeat(thr_g, totals)
    counts = (
        np.add.reduceat(mask, inputs.offsets[:-1], dtype=np.int64) if G else np.zeros(0, np.int64)
    )
    counts = np.where(keep_g >= 0, np.maximum(keep_g, fixed_g), counts)

    if isinstance(min_keep, float):
        floor = np.ceil(min_keep * totals - 1e-9).astype(np.int64)
    else:
        floor = np.minimum(-(-int(min_keep) // widths), totals)
    clamped = active & (counts < floor)
    counts = np.where(clamped, floor, counts)
    emptied = np.flatnonzero(active & (counts == 0))
    if emptied.size:
        names = ", ".join(_label(groups[i]) for i in emptied[:5])
        raise PruneError(
            f"the plan would remove every channel of {emptied.size} group(s): {names}"
            f"{', ...' if emptied.size > 5 else ''}. Use min_keep >= 1 (the default), a lower "
            "percent/threshold, or ignore these layers"
        )
    if round_to > 1:
        step = round_to // np.gcd(round_to, widths)
        rounded = np.minimum(-(-counts // step) * step, totals)
        counts = np.where(active, rounded, counts)
    for i in np.flatnonzero(clamped):
        g = groups[i]
        warnings.append(
            f"{_label(g)}: below min_keep, kept the best {int(counts[i]) * g.width} of {g.total * g.width} channels"
        )

    counts = np.where(active, counts, totals)
    kept_mask = arr.rank < np.repeat(counts, totals)
    for gid, layers in inputs.partial:  # min_keep holds per layer: a concat's branch keeps its best
        if not active[gid]:
            continue
        g, off = groups[gid], int(inputs.offsets[gid])
        mask = kept_mask[off : off + g.total]
        for name, units in layers:
            need = max(1, math.ceil(min_keep * units.size - 1e-9) if isinstance(min_keep, float)
                       else min(-(-int(min_keep) // g.width), units.size))
            have = int(mask[units].sum())
            if have < need:
                spare = units[~mask[units]]
                mask[spare[np.argsort(arr.rank[off + spare])][: need - have]] = True
                warnings.append(f"{_label(g)}: {name} would keep {have * g.width} channel(s), below min_keep; "
                                f"kept its best {need * g.width}")
                clamped[gid] = True
        counts[gid] = int(mask.sum())
    params_after, flops_after = inputs.cost.evaluate(counts, kept_mask)

    plan_groups = []
    offsets = inputs.offsets
    for g in groups:
        i, n = g.id, int(counts[g.id])
        if n == g.total:
            kept = list(range(n))
        else:
            kept = np.flatnonzero(kept_mask[offsets[i] : offsets[i] + g.total]).tolist()
        by_threshold = active[i] and "keep" not in override_of.get(i, {})
        g_thr = float(thr_g[i]) if by_threshold else None
        plan_groups.append(
            PlanGroup(
                id=i,
                root=g.root,
                layers=list(g.layers),
                convs=list(g.convs),
                total=g.total,
                kept_idxs=kept,
                threshold=g_thr,
                clamped=bool(clamped[i]),
                ignored=not active[i],
                reason=reasons[i],
                override=override_of.get(i),
                sizes=dict(g.sizes),
                width=g.width,
            )
        )

    prunable_before = int(((totals - fixed_g) * widths)[active].sum())
    options = {
        "percent": percent,
        "threshold": threshold,
        "min_keep": min_keep,
        "round_to": round_to,
        "score": score,
        "ignore": list(ignore),
        "overrides": overrides,
        "global_threshold": thr if np.isfinite(thr) else None,
    }
    totals_d = {
        "channels_before": int((totals * widths).sum()),
        "channels_after": int((counts * widths).sum()),
        "prunable_before": prunable_before,
        "prunable_after": int(((counts - fixed_g) * widths)[active].sum()),
        "params_before": inputs.cost.params_before,
        "params_after": params_after,
        "flops_before": inputs.cost.flops_before,
        "flops_after": flops_after,
    }
    short = _shortfall(groups, active, reasons, percent, totals_d)
    if short:
        warnings.append(short)
    held = _flops_held(groups, active, counts, percent, score, totals_d)
    if held:
        warnings.append(held)
    return PrunePlan(list(inputs.input_shape), plan_groups, options, totals_d, warnings)


def _shortfall(groups, active: np.ndarray, reasons: list[str | None], percent: float | None,
               totals: dict[str, int]) -> str | None:
    """When the plan cuts less than half of `percent` of all channels: the main reasons, with counts."""
    before, after = totals["channels_before"], totals["channels_after"]
    if percent is None or percent <= 0 or not before:
        return None
    removed = 1 - after / before
    if removed >= percent / 2:
        return None
    channels: Counter[str] = Counter()
    layers: dict[str, set[str]] = {}
    for g in groups:
        outs = g.out_names()
        if not active[g.id]:
            why = reasons[g.id] or "left whole"
            channels[why] += g.total * g.width
            layers.setdefault(why, set()).update(outs)
            continue
        for why in g.unit_reasons:
            if why:
                channels[why] += g.width
                layers.setdefault(why, set()).update(outs)
    lines = [f"{n:,} channels in {len(layers[why])} layer(s): {why}" for why, n in channels.most_common(4)]
    more = len(channels) - len(lines)
    return (
        f"asked to cut {percent:.0%} of the prunable channels, this plan cuts {removed:.1%} of all channels "
        f"({before - after:,} of {before:,}). Channels left whole: " + "; ".join(lines)
        + (f"; and {more} other reason(s)" if more > 0 else "")
    )


LONG_CHAIN = 8  # BatchNorms scoring one group beyond which a max of independent |gamma| is rarely small


def _flops_held(groups, active: np.ndarray, counts: np.ndarray, percent: float | None, score: str,
                totals: dict[str, int]) -> str | None:
    """When the plan removes less than half of `percent` of the FLOPs and, scored by 'max', groups
    that many BatchNorms score keep nearly every channel: those groups, and why."""
    before, after = totals["flops_before"], totals["flops_after"]
    if percent is None or percent <= 0 or not before or 1 - after / before >= percent / 2 or score != "max":
        return None
    held = [g for g in groups if active[g.id] and len(g.layers) >= LONG_CHAIN and counts[g.id] >= 0.9 * g.total]
    if not held:
        return None
    held.sort(key=lambda g: -len(g.layers))
    named = "; ".join(f"{_label(g)} keeps {int(counts[g.id]) * g.width} of {g.total * g.width} channels, "
                      f"each scored by the largest |gamma| among the {len(g.layers)} BatchNorms holding it" for g in held[:3])
    more = f" (and {len(held) - 3} more such groups)" if len(held) > 3 else ""
    return (
        f"this plan removes {1 - after / before:.1%} of the FLOPs: {named}{more}. Unless those BatchNorms were "
        "sparse-trained together, one of them rarely has a small |gamma|; score 'l2' or 'mean' ranks long "
        "coupled chains (residual stages, re-parameterizable branches) comparably with short ones"
    )


def make_plan(
    source: PlanInputs | nn.Module,
    *,
    percent: float | None = None,
    threshold: float | None = None,
    min_keep: int | float = 1,
    round_to: int = 1,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    ignore: Sequence[str] = (),
    score: str = "max",
    input_shape: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> PrunePlan:
    """A plan from a model (traced once here) or from `precompute(model)` output. See module docstring."""
    if isinstance(source, nn.Module):
        _check_options(percent, threshold, min_keep, round_to, score)
        source = precompute(source, input_shape, score=score, progress=progress)
    elif not isinstance(source, PlanInputs):
        raise PruneError(
            f"make_plan needs a model or PlanInputs (from precompute), not {type(source).__name__}"
        )
    return plan_from_inputs(
        source,
        percent=percent,
        threshold=threshold,
        min_keep=min_keep,
        round_to=round_to,
        overrides=overrides,
        ignore=ignore,
        score=score,
    )
