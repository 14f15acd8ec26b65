"""Accuracy/size of a model pruned at many ratios without finetuning: where the cliff is."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from engine.measure import count_flops, count_params
from engine.slim.apply import apply_plan
from engine.slim.inputs import PlanInputs, precompute
from engine.slim.plan import plan_from_inputs


def sweep(
    model: nn.Module,
    inputs: PlanInputs | Sequence[int] | None,
    evaluate: Callable[[nn.Module], dict[str, float]],
    ratios: Iterable[float] = tuple(np.arange(0, 0.91, 0.05)),
    **plan_opts: Any,
) -> list[dict[str, Any]]:
    """For each ratio: prune a deep copy at that `percent` (no finetune) and evaluate it.

    Returns one row per ratio: ratio, the metrics `evaluate` returned (accuracy, ...), params,
    flops, channels (kept, of prunable groups) and clamped (groups held at min_keep). `inputs` is
    `precompute(model)` output, or the model's (C, H, W) input shape / None to precompute here.
    Writes nothing.
    """
    if "percent" in plan_opts or "threshold" in plan_opts:
        raise TypeError("sweep sets percent from ratios; do not pass percent or threshold")
    if not isinstance(inputs, PlanInputs):
        inputs = precompute(model, inputs, score=plan_opts.get("score", "max"))
    rows = []
    for ratio in ratios:
        ratio = round(float(ratio), 6)
        plan = plan_from_inputs(inputs, percent=ratio, **plan_opts)
        pruned = apply_plan(copy.deepcopy(model), plan)
        metrics = dict(evaluate(pruned))
        rows.append(
            {
                "ratio": ratio,
                **{k: float(v) if isinstance(v, int | float) else v for k, v in metrics.items()},
                "params": count_params(pruned),
                "flops": count_flops(pruned, inputs.input_shape),
                "channels": plan.totals["prunable_after"],
                "clamped": sum(g.clamped for g in plan.groups),
            }
        )
    return rows
