"""sweep: prune copies at several ratios without finetuning, evaluate, report size."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine.measure import count_flops, count_params
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import plan_from_inputs
from engine.slim.sweep import sweep


def test_sweep_rows_shrink_with_ratio_and_start_at_the_unpruned_accuracy():
    torch.manual_seed(0)
    model = models.build("resnet_cifar", 10, width=0.25).eval()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(
                    torch.from_numpy(rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32))
                )
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        labels = model(x).argmax(1)
    labels[:16] = (labels[:16] + 1) % 10  # the unpruned model is 75% right on this set

    def evaluate(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"accuracy": float((m.eval()(x).argmax(1) == labels).float().mean()), "n": 64}

    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = sweep(model, precompute(model), evaluate, ratios=[0.0, 0.3, 0.6, 0.9], round_to=2)
    assert [r["ratio"] for r in rows] == [0.0, 0.3, 0.6, 0.9]
    assert rows[0]["accuracy"] == evaluate(model)["accuracy"] == 0.75
    assert rows[0]["params"] == count_params(model)
    assert rows[0]["flops"] == count_flops(model, model.input_size)
    for a, b in zip(rows, rows[1:], strict=False):
        assert (
            b["params"] <= a["params"]
            and b["flops"] <= a["flops"]
            and b["channels"] <= a["channels"]
        )
    assert rows[-1]["params"] < rows[0]["params"] / 2
    assert all(
        set(r) >= {"ratio", "accuracy", "n", "params", "flops", "channels", "clamped"} for r in rows
    )
    # sweep pruned copies: the model itself is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_sweep_from_an_input_shape_and_refusing_percent():
    model = models.build("resnet_cifar", 10, width=0.25)
    rows = sweep(model, (3, 16, 16), lambda m: {"accuracy": 0.5, "note": "x"}, ratios=[0.2])
    assert rows[0]["flops"] == count_flops(apply_plan_at(model, 0.2), (3, 16, 16))
    assert rows[0]["note"] == "x" and rows[0]["accuracy"] == 0.5
    with pytest.raises(TypeError, match="percent"):
        sweep(model, None, lambda m: {}, ratios=[0.1], threshold=0.1)


def apply_plan_at(model: nn.Module, percent: float) -> nn.Module:
    plan = plan_from_inputs(precompute(model, (3, 16, 16)), percent=percent)
    return apply_plan(copy.deepcopy(model), plan)
