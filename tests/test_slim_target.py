"""Prune targets other than a percent (target_flops, target_params, max_drop), resolved through
the plan code, checked against the cost model and the actually pruned model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine.errors import PruneError
from engine.measure import count_flops, count_params
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import plan_from_inputs
from engine.slim.target import kept_fraction, ratio_for_max_drop, resolve_plan, threshold_for_target


def spread_gammas(model: nn.Module, seed: int = 0) -> nn.Module:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.from_numpy(rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32)))
    return model


@pytest.fixture(scope="module", params=["vgg", "resnet_cifar"])
def model_inputs(request):
    torch.manual_seed(0)
    kwargs = {"vgg": {"depth": 11, "width": 0.25}, "resnet_cifar": {"depth": 8, "width": 0.5}}[request.param]
    model = spread_gammas(models.build(request.param, 10, **kwargs)).eval()
    return model, precompute(model)


@pytest.mark.parametrize("kind,key", [("target_flops", "flops"), ("target_params", "params")])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_cost_target_keeps_at_most_the_fraction_and_is_the_lowest_such_threshold(model_inputs, kind, key, fraction):
    model, inputs = model_inputs
    shape = {"min_keep": 2, "round_to": 2}
    thr, plan = threshold_for_target(inputs, kind, fraction, **shape)
    assert kept_fraction(plan, key) <= fraction
    # the next lower channel score would keep more than the fraction: no cheaper-to-satisfy threshold
    scores = np.unique(inputs.arrays().sorted_prunable)
    lower = scores[scores < thr]
    if lower.size:
        assert kept_fraction(plan_from_inputs(inputs, threshold=float(lower[-1]), **shape), key) > fraction
    # the plan's estimate is what the cut model measures
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert count_params(pruned) == plan.totals["params_after"]
    assert count_flops(pruned, inputs.input_shape) == pytest.approx(plan.totals["flops_after"], rel=0.02)
    # resolve_plan records the target and what was reached
    again = resolve_plan(inputs, **{kind: fraction}, **shape)
    assert again.options["target"] == {kind: fraction, "reached": pytest.approx(kept_fraction(plan, key), abs=1e-6)}
    assert again.options["threshold"] == thr


def test_unreachable_target_names_the_closest_reachable_value(model_inputs):
    _, inputs = model_inputs
    with pytest.raises(PruneError) as e:
        threshold_for_target(inputs, "target_flops", 0.001, min_keep=0.5)
    msg = str(e.value)
    assert "target_flops 0.001 cannot be reached" in msg and "min_keep 0.5" in msg
    closest = float(msg.split("Use target_flops >= ")[1].split(",")[0])
    # the value named is reachable, and (to the 0.001 it is rounded to) the smallest that is
    thr, plan = threshold_for_target(inputs, "target_flops", closest, min_keep=0.5)
    assert kept_fraction(plan, "flops") <= closest
    with pytest.raises(PruneError):
        threshold_for_target(inputs, "target_flops", closest - 0.002, min_keep=0.5)
    with pytest.raises(PruneError, match="fraction kept"):
        threshold_for_target(inputs, "target_params", 1.5)
    with pytest.raises(PruneError, match="exactly one"):
        resolve_plan(inputs, percent=0.3, target_flops=0.5)


def test_full_target_prunes_nothing(model_inputs):
    _, inputs = model_inputs
    plan = resolve_plan(inputs, target_params=1.0)
    assert not plan.pruned_groups


def test_max_drop_picks_the_largest_ratio_before_the_cliff(model_inputs):
    model, inputs = model_inputs
    full = count_params(model)

    def evaluate(m: nn.Module) -> dict[str, float]:
        kept = count_params(m) / full  # a stand-in accuracy: flat, then a cliff below 60% of params
        return {"accuracy": 0.9 if kept >= 0.6 else 0.9 - (0.6 - kept)}

    ratio, rows = ratio_for_max_drop(model, inputs, evaluate, 1.0, ratios=[0.0, 0.2, 0.4, 0.6, 0.8], refine=3)
    assert rows[0]["ratio"] == 0.0
    within = [r["ratio"] for r in rows if (0.9 - r["accuracy"]) * 100 <= 1.0]
    beyond = [r["ratio"] for r in rows if (0.9 - r["accuracy"]) * 100 > 1.0]
    assert ratio == max(within) and ratio < min(beyond)
    assert min(beyond) - ratio <= 0.2 / 2**3 + 1e-9  # refined 3 times inside the 0.2-wide bracket
    assert len(rows) == 5 + 3

    # a noisy ratio above the cliff is not trusted: the walk stops at the first failure
    def spiky(m: nn.Module) -> dict[str, float]:
        kept = count_params(m) / full
        return {"accuracy": 0.9 if kept >= 0.6 or kept < 0.2 else 0.5}

    ratio, _ = ratio_for_max_drop(model, inputs, spiky, 1.0, ratios=[0.0, 0.2, 0.4, 0.6, 0.8, 0.9], refine=0)
    assert ratio < 0.8
