"""Prune targets other than a percent, resolved through the plan code itself.

- `target_flops` / `target_params` f (fraction kept, in (0, 1]): the lowest global |gamma|
  threshold whose plan keeps at most f of the model's FLOPs / parameters, found by bisection over
  the distinct channel scores with `plan_from_inputs` as the cost oracle. The cost is the plan's
  own estimate (engine/slim/cost.py), so the number shown in a preview, the prune stage and the
  pruned checkpoint agree. Cost never rises with the threshold (min_keep and round_to only clamp
  counts upward per group), which is what makes bisection exact.
- `max_drop` d (accuracy points): the largest ratio before the first sweep ratio whose accuracy
  without finetuning falls more than d points below the unpruned model, refined by bisection
  between the last ratio within the drop and the first beyond it.
A target below what `min_keep` allows is an error naming the smallest reachable value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.errors import PruneError

COST_KEYS = {"target_flops": "flops", "target_params": "params"}
SWEEP_RATIOS = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0 .. 0.95


def _plan(inputs: Any, threshold: float, shape: dict[str, Any]) -> Any:
    from engine.slim.plan import plan_from_inputs

    return plan_from_inputs(inputs, threshold=threshold, **shape)


def kept_fraction(plan: Any, key: str) -> float:
    """Fraction of the model's `key` ('flops' or 'params') the plan keeps, by its cost estimate."""
    t = plan.totals
    return t[f"{key}_after"] / max(1, t[f"{key}_before"])


def threshold_for_target(inputs: Any, kind: str, fraction: float, **shape: Any) -> tuple[float, Any]:
    """(threshold, plan): the lowest threshold whose plan keeps at most `fraction` of FLOPs or params.

    `kind` is 'target_flops' or 'target_params'; `shape` holds the other plan options (min_keep,
    round_to, score, ignore, overrides). Raises PruneError with the smallest reachable fraction when
    `fraction` is below it.
    """
    if kind not in COST_KEYS:
        raise PruneError(f"unknown target {kind!r}: use one of {', '.join(COST_KEYS)}")
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise PruneError(f"{kind} {fraction!r} must be the fraction kept, in (0, 1], e.g. 0.5")
    key = COST_KEYS[kind]
    scores = inputs.arrays(shape.get("score") or inputs.score).sorted_prunable
    values = np.unique(scores[np.isfinite(scores)])
    if values.size == 0:
        raise PruneError(f"{kind} {fraction}: the model has no prunable channel group")
    # candidate j < n cuts the channels scoring below values[j]; candidate n cuts every channel
    # (each group then keeps its min_keep floor): the most any plan with these options can remove.
    candidates = [float(v) for v in values] + [float(np.nextafter(values[-1], np.inf))]
    lo, hi = 0, len(candidates) - 1
    plan_hi = _plan(inputs, candidates[hi], shape)
    reachable = kept_fraction(plan_hi, key)
    if reachable > fraction + 1e-12:
        closest = math.ceil(reachable * 1000) / 1000
        raise PruneError(
            f"{kind} {fraction:g} cannot be reached: with min_keep {shape.get('min_keep', 1)!r}"
            f"{_shape_note(shape)} the smallest plan keeps {reachable:.1%} of the {key} "
            f"({plan_hi.totals[f'{key}_after']:,} of {plan_hi.totals[f'{key}_before']:,}). "
            f"Use {kind} >= {closest:g}, or a lower min_keep / fewer ignored layers"
        )
    plan_lo = _plan(inputs, candidates[lo], shape)
    if kept_fraction(plan_lo, key) <= fraction:
        return candidates[lo], plan_lo
    best = plan_hi
    while hi - lo > 1:  # invariant: cost(lo) > fraction >= cost(hi)
        mid = (lo + hi) // 2
        plan = _plan(inputs, candidates[mid], shape)
        if kept_fraction(plan, key) <= fraction:
            hi, best = mid, plan
        else:
            lo = mid
    return candidates[hi], best


def _shape_note(shape: dict[str, Any]) -> str:
    notes = []
    if shape.get("round_to", 1) > 1:
        notes.append(f"round_to {shape['round_to']}")
    if shape.get("ignore"):
        notes.append(f"ignore {list(shape['ignore'])}")
    if shape.get("overrides"):
        notes.append("overrides")
    return f" ({', '.join(notes)})" if notes else ""


def resolve_plan(
    inputs: Any,
    *,
    percent: float | None = None,
    threshold: float | None = None,
    target_flops: float | None = None,
    target_params: float | None = None,
    **shape: Any,
) -> Any:
    """The PrunePlan of exactly one rule; a FLOPs/params target is recorded in `plan.options['target']`."""
    from engine.slim.plan import plan_from_inputs

    given = {k: v for k, v in (("percent", percent), ("threshold", threshold),
                                ("target_flops", target_flops), ("target_params", target_params)) if v is not None}
    if len(given) != 1:
        raise PruneError(
            "give exactly one of percent, threshold, target_flops or target_params"
            + (f" (got {', '.join(given)})" if given else "")
        )
    (kind, value), = given.items()
    if kind in COST_KEYS:
        _, plan = threshold_for_target(inputs, kind, value, **shape)
        plan.options["target"] = {kind: value, "reached": round(kept_fraction(plan, COST_KEYS[kind]), 6)}
        return plan
    return plan_from_inputs(inputs, **{kind: value}, **shape)


def ratio_for_max_drop(
    model: Any,
    inputs: Any,
    evaluate: Callable[[Any], dict[str, float]],
    max_drop: float,
    *,
    ratios: Sequence[float] = SWEEP_RATIOS,
    refine: int = 3,
    metric: str = "accuracy",
    **shape: Any,
) -> tuple[float, list[dict[str, Any]]]:
    """(ratio, sweep rows): the largest ratio within `max_drop` points of `metric` (a fraction:
    accuracy, mAP50-95) of the unpruned model.

    Walks the sweep from ratio 0 up and stops at the first ratio beyond the drop (the cliff; a
    noisy ratio above it is not trusted), then bisects `refine` times between the two.
    """
    from engine.slim.sweep import sweep

    if not (isinstance(max_drop, int | float) and max_drop > 0):
        raise PruneError(f"max_drop {max_drop!r} must be a positive number of accuracy points, e.g. 1.0")
    grid = sorted({0.0, *(round(float(r), 6) for r in ratios)})
    rows = sweep(model, inputs, evaluate, ratios=grid, **shape)
    base = rows[0][metric]
    within = lambda row: (base - row[metric]) * 100 <= max_drop + 1e-9  # noqa: E731
    good, bad = 0.0, None
    for row in rows[1:]:
        if not within(row):
            bad = row["ratio"]
            break
        good = row["ratio"]
    for _ in range(refine if bad is not None else 0):
        mid = round((good + bad) / 2, 6)
        row = sweep(model, inputs, evaluate, ratios=[mid], **shape)[0]
        rows.append(row)
        if within(row):
            good = mid
        else:
            bad = mid
    rows.sort(key=lambda r: r["ratio"])
    return good, rows


# ---------------------------------------------------------------- presets


def stage_target(stages: Sequence[Any], index: int) -> Any | None:
    """The plan rule a training stage is measured against: its own `target`, else (sparse stages
    only) the rule of the next prune stage, unless that one needs a sweep (max_drop)."""
    stage = stages[index]
    own = getattr(stage, "target", None)
    if own is not None:
        return own
    if stage.type != "sparse":
        return None
    for later in stages[index + 1:]:
        if later.type == "prune":
            return None if later.max_drop is not None else later
    return None


def check_stage_targets(stages: Sequence[Any]) -> None:
    """Preset errors: `s: auto` or `select: best` on a sparse stage without a target."""
    for i, stage in enumerate(stages):
        if stage.type != "sparse":
            continue
        target = stage_target(stages, i)
        if target is not None:
            continue
        nxt = next((s for s in stages[i + 1:] if s.type == "prune"), None)
        why = (f"the next prune stage {nxt.name!r} uses max_drop, which needs a sweep"
               if nxt is not None else "no prune stage follows it")
        if stage.s == "auto":
            raise ValueError(
                f"stage {stage.name!r}: s: auto steers s by the accuracy of the model pruned at a target, "
                f"but {why}. Give the stage a target, e.g. target: {{percent: 0.5}} or "
                "target: {target_flops: 0.5}, or a number for s"
            )
        if stage.select == "best":
            raise ValueError(
                f"stage {stage.name!r}: select: best ranks sparse epochs by acc_pruned_at_target, but {why}. "
                "Give the stage a target (e.g. target: {percent: 0.5}) or use select: last"
            )


def plan_for_rule(
    model: Any,
    input_shape: Sequence[int] | None,
    rule: Any,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    metric: str = "accuracy",
) -> tuple[Any, list[dict[str, Any]] | None]:
    """(plan, sweep rows or None) for a preset plan rule (a prune stage or a target).

    `evaluate(pruned copy) -> {metric: ...}` is needed for `max_drop` only (its points are of
    `metric`); `progress` hears about building the channel graph (engine/slim/trace.py).
    """
    from engine.slim.inputs import precompute
    from engine.slim.plan import plan_from_inputs

    opts = rule.plan_options()
    inputs = precompute(model, input_shape, score=opts["score"], progress=progress)
    max_drop = getattr(rule, "max_drop", None)
    if max_drop is None:
        return resolve_plan(inputs, **opts), None
    if evaluate is None:
        raise PruneError("max_drop needs an evaluation of pruned copies (a dataset): none was given")
    shape = {k: v for k, v in opts.items() if k not in ("percent", "threshold", *COST_KEYS)}
    ratio, rows = ratio_for_max_drop(model, inputs, evaluate, max_drop, metric=metric, **shape)
    plan = plan_from_inputs(inputs, percent=ratio, **shape)
    base = rows[0][metric]
    at = next(r for r in rows if r["ratio"] == ratio)
    plan.options["target"] = {"max_drop": max_drop, "ratio": ratio, "drop": round((base - at[metric]) * 100, 4)}
    if ratio == 0.0:
        first = rows[1] if len(rows) > 1 else None
        plan.warnings.append(
            f"max_drop {max_drop:g}: every ratio tried costs more than {max_drop:g} {metric} points"
            + (f" (ratio {first['ratio']:g} costs {(base - first[metric]) * 100:.1f})" if first else "")
            + "; nothing was pruned. Sparse-train longer or with a larger s, or allow a larger drop"
        )
    return plan, rows
