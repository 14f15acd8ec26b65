"""PrunePlan rules (percent, threshold, min_keep, round_to, overrides, ignore), serialisation and
the params/FLOPs estimate against counts on the actually pruned model."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine.errors import PruneError
from engine.measure import count_flops, count_params
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import PrunePlan, make_plan, plan_from_inputs

from helpers import SMALL_SLIMMABLE as SMALL


def cbr(c1: int, c2: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU())


class Chain(nn.Module):
    """Three independent conv-BN groups (8, 16, 8 channels) and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = cbr(3, 8), cbr(8, 16), cbr(16, 8)
        self.fc = nn.Linear(8, 5)
        self.input_size = (3, 6, 6)
        self.default_ignore = ["fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c3(self.c2(self.c1(x))).mean((2, 3)))


BNS = ("c1.1", "c2.1", "c3.1")


@pytest.fixture(scope="module")
def chain():
    torch.manual_seed(0)
    model = Chain()
    values = np.random.default_rng(0).permutation(np.arange(1, 33)) / 100.0  # 32 distinct |gamma|
    sign = np.where(np.arange(32) % 3 == 0, -1.0, 1.0)
    parts = np.split(values * sign, [8, 24])
    with torch.no_grad():
        for name, part in zip(BNS, parts, strict=True):
            model.get_submodule(name).weight.copy_(torch.tensor(part, dtype=torch.float32))
    return model, precompute(model), {n: np.abs(p) for n, p in zip(BNS, parts, strict=True)}


def group_of(plan, bn):
    return next(g for g in plan.groups if bn in g.layers)


def kept_gammas(plan, gammas):
    return {bn: gammas[bn][group_of(plan, bn).kept_idxs] for bn in BNS}


@pytest.mark.parametrize("percent", [0.0, 0.25, 0.5, 0.7])
def test_percent_cuts_the_lowest_global_fraction(chain, percent):
    _, inputs, gammas = chain
    plan = plan_from_inputs(inputs, percent=percent)
    everything = np.sort(np.concatenate(list(gammas.values())))
    n_cut = int(32 * percent)
    kept = np.concatenate(list(kept_gammas(plan, gammas).values()))
    np.testing.assert_allclose(np.sort(kept), everything[n_cut:], rtol=1e-6)
    assert plan.totals["prunable_before"] == 32 and plan.totals["prunable_after"] == 32 - n_cut
    assert plan.options["global_threshold"] == pytest.approx(everything[n_cut], rel=1e-6)
    assert not plan.warnings


def test_threshold_is_absolute_per_channel(chain):
    _, inputs, gammas = chain
    plan = plan_from_inputs(inputs, threshold=0.105)
    for bn, kept in kept_gammas(plan, gammas).items():
        np.testing.assert_allclose(
            np.sort(kept), np.sort(gammas[bn][gammas[bn] >= 0.105]), rtol=1e-6
        )
        assert group_of(plan, bn).threshold == 0.105


def test_kept_idxs_are_ascending_and_the_best_of_each_group(chain):
    _, inputs, gammas = chain
    plan = plan_from_inputs(inputs, percent=0.6)
    for bn in BNS:
        g = group_of(plan, bn)
        assert g.kept_idxs == sorted(g.kept_idxs)
        cut = np.setdiff1d(np.arange(g.total), g.kept_idxs)
        if cut.size:
            assert gammas[bn][cut].max() < gammas[bn][g.kept_idxs].min()


def test_min_keep_clamps_and_warns(chain):
    _, inputs, gammas = chain
    plan = plan_from_inputs(inputs, threshold=1.0)  # above every |gamma|
    for bn in BNS:
        g = group_of(plan, bn)
        assert g.kept == 1 and g.clamped
        assert g.kept_idxs == [int(np.argmax(gammas[bn]))]
    assert len(plan.warnings) == 3 and any("c2.1" in w for w in plan.warnings)
    plan = plan_from_inputs(inputs, threshold=1.0, min_keep=0.3)
    assert [group_of(plan, bn).kept for bn in BNS] == [3, 5, 3]  # ceil(0.3 * total)
    plan = plan_from_inputs(inputs, threshold=1.0, min_keep=12)
    assert [group_of(plan, bn).kept for bn in BNS] == [8, 12, 8]  # capped at the group size


def test_min_keep_zero_refuses_to_empty_a_group(chain):
    _, inputs, _ = chain
    with pytest.raises(PruneError, match=r"every channel.*c1\.1"):
        plan_from_inputs(inputs, threshold=1.0, min_keep=0)
    plan = plan_from_inputs(inputs, threshold=0.01, min_keep=0)  # nothing emptied: fine
    assert not any(g.clamped for g in plan.groups)


def test_round_to_rounds_up_with_the_next_best_channels(chain):
    _, inputs, gammas = chain
    base = plan_from_inputs(inputs, percent=0.55)
    plan = plan_from_inputs(inputs, percent=0.55, round_to=4)
    for bn in BNS:
        b, g = group_of(base, bn), group_of(plan, bn)
        assert g.kept == min(math.ceil(b.kept / 4) * 4, g.total)
        assert set(b.kept_idxs) <= set(g.kept_idxs)
        order = np.argsort(-gammas[bn], kind="stable")
        assert set(g.kept_idxs) == set(order[: g.kept].tolist())


def test_overrides_and_ignore(chain):
    _, inputs, gammas = chain
    plan = plan_from_inputs(
        inputs, percent=0.5, overrides={"c2.*": {"keep": 0.75}, "c1.1": {"threshold": 0.2}}
    )
    c2 = group_of(plan, "c2.1")
    assert c2.kept == 12 and c2.override == {"keep": 0.75} and c2.threshold is None
    c1 = group_of(plan, "c1.1")
    assert c1.threshold == 0.2 and c1.kept == int((gammas["c1.1"] >= 0.2).sum())
    plan = plan_from_inputs(inputs, percent=0.5, ignore=["c3.*"])
    c3 = group_of(plan, "c3.1")
    assert c3.ignored and c3.kept == 8 and "c3" in c3.reason
    # the percentile is taken over the remaining 24 channels only
    pool = np.sort(np.concatenate([gammas["c1.1"], gammas["c2.1"]]))
    assert plan.options["global_threshold"] == pytest.approx(pool[12], rel=1e-6)
    plan = plan_from_inputs(inputs, percent=0.5, overrides={"nothing*": {"keep": 0.5}})
    assert any("nothing*" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"percent": 1.0}, "outside"),
        ({"percent": -0.1}, "outside"),
        ({}, "exactly one"),
        ({"percent": 0.5, "threshold": 0.1}, "exactly one"),
        ({"threshold": -1.0}, "threshold"),
        ({"percent": 0.5, "min_keep": 1.5}, "min_keep"),
        ({"percent": 0.5, "min_keep": -2}, "min_keep"),
        ({"percent": 0.5, "round_to": 0}, "round_to"),
        ({"percent": 0.5, "score": "median"}, "score"),
        ({"percent": 0.5, "overrides": {"c1*": {"keep": 2}}}, "ratio"),
        ({"percent": 0.5, "overrides": {"c1*": {"percent": 0.2}}}, "threshold"),
    ],
)
def test_bad_options_are_prune_errors(chain, kwargs, match):
    _, inputs, _ = chain
    with pytest.raises(PruneError, match=match):
        plan_from_inputs(inputs, **kwargs)


def test_score_kinds_differ_only_on_coupled_groups(chain):
    _, inputs, _ = chain
    a = plan_from_inputs(inputs, percent=0.5, score="max")
    b = plan_from_inputs(inputs, percent=0.5, score="l2")
    assert [g.kept_idxs for g in a.groups] == [g.kept_idxs for g in b.groups]  # one BN per group
    assert b.options["score"] == "l2"


def test_json_round_trip_is_identical(chain):
    model, inputs, _ = chain
    plan = plan_from_inputs(inputs, percent=0.4, round_to=2, overrides={"c2.*": {"keep": 0.5}})
    d = plan.to_dict()
    text = json.dumps(d)
    again = PrunePlan.from_dict(json.loads(text))
    assert again.to_dict() == d
    assert json.dumps(again.to_dict()) == text  # stable key order
    assert list(d) == ["version", "input_shape", "options", "totals", "warnings", "groups"]
    assert (
        make_plan(model, percent=0.4, round_to=2, overrides={"c2.*": {"keep": 0.5}}).to_dict() == d
    )


def test_from_dict_rejects_broken_plans(chain):
    _, inputs, _ = chain
    d = plan_from_inputs(inputs, percent=0.5).to_dict()
    with pytest.raises(PruneError, match="version"):
        PrunePlan.from_dict({**d, "version": 99})
    bad = copy.deepcopy(d)
    bad["groups"][1]["kept_idxs"] = [3, 1]
    with pytest.raises(PruneError, match="ascending"):
        PrunePlan.from_dict(bad)
    bad = copy.deepcopy(d)
    del bad["groups"][0]["sizes"]
    with pytest.raises(PruneError, match="malformed"):
        PrunePlan.from_dict(bad)
    with pytest.raises(PruneError, match="not a prune plan"):
        PrunePlan.from_dict({"weights": 1})




def lognormal_gammas(model: nn.Module, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.weight.copy_(
                    torch.from_numpy(rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32))
                )


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_estimate_equals_real_params_and_flops_after_apply(arch):
    """The estimate is exact (not approximate): same integers as counting the pruned model."""
    torch.manual_seed(0)
    model = models.build(arch, 10, **SMALL[arch])
    lognormal_gammas(model)
    inputs = precompute(model)
    assert inputs.cost.params_before == count_params(model)
    assert inputs.cost.flops_before == count_flops(model, model.input_size)
    for opts in (
        {"percent": 0.5},
        {"percent": 0.7, "round_to": 8},
        {"threshold": 0.2, "min_keep": 0.25},
    ):
        plan = plan_from_inputs(inputs, **opts)
        pruned = apply_plan(copy.deepcopy(model), plan)
        assert plan.totals["params_after"] == count_params(pruned), opts
        assert plan.totals["flops_after"] == count_flops(pruned, model.input_size), opts
        assert plan.totals["params_after"] < plan.totals["params_before"]


def test_precompute_on_a_model_without_batchnorm_explains():
    model = models.build("kd_student", 10)  # the tutorial student has no BatchNorm
    with pytest.raises(PruneError, match="BatchNorm"):
        make_plan(model, percent=0.5)


def test_numpy_scalars_are_accepted_and_stored_as_plain_numbers(chain):
    _, inputs, _ = chain
    plan = plan_from_inputs(
        inputs, percent=np.float64(0.5), min_keep=np.int64(2), round_to=np.int32(2)
    )
    assert plan.to_dict()["options"]["percent"] == 0.5
    assert type(plan.options["min_keep"]) is int and type(plan.options["round_to"]) is int
    json.dumps(plan.to_dict())


class MostlyFixed(nn.Module):
    """A wide stream that a channel mean reads (so it can never lose channels) and a small free branch."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = cbr(3, 48)
        self.free = cbr(48, 8)
        self.fc = nn.Linear(48 + 8 + 1, 3)
        self.input_size = (3, 6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.wide(x)
        y = torch.cat([w, self.free(w), w.mean(1, keepdim=True)], 1)
        return self.fc(y.mean((2, 3)))


def test_a_plan_cutting_far_less_than_asked_says_why_with_counts():
    model = MostlyFixed()
    with torch.no_grad():
        model.free[1].weight.copy_(torch.linspace(0.1, 0.8, 8))
    plan = make_plan(model, percent=0.5)
    short = [w for w in plan.warnings if w.startswith("asked to cut 50%")]
    assert len(short) == 1
    assert "this plan cuts 6.8% of all channels (4 of 59)" in short[0]
    assert "48 channels in 2 layer(s): mean over dimension 1 combines them, in MostlyFixed" in short[0]
    assert "3 channels in 1 layer(s): they are model outputs" in short[0]


class TwoBranches(nn.Module):
    """Two convs concatenated under one BatchNorm: one group, each conv holding half its channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = cbr(8, 6)
        self.fc = nn.Linear(6, 2)
        self.input_size = (3, 6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(self.head(y).mean((2, 3)))


def test_min_keep_holds_for_every_layer_of_a_group_not_only_the_group():
    model = TwoBranches()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([0.5, 0.6, 0.7, 0.8, 0.01, 0.02, 0.03, 0.04]))
        model.head[1].weight.copy_(torch.linspace(0.2, 0.9, 6))
    plan = make_plan(model, percent=0.4)
    g = next(g for g in plan.groups if "a" in g.convs)
    assert "b" in g.convs and g.kept_idxs == [0, 1, 2, 3, 7]  # b keeps its best channel
    assert any("b would keep 0 channel(s), below min_keep" in w for w in plan.warnings)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert pruned.b.out_channels == 1 and pruned.a.out_channels == 4
    assert plan.totals["params_after"] == count_params(pruned)


def test_the_clamp_warning_counts_the_channels_round_to_kept(chain):
    _, inputs, _ = chain
    plan = plan_from_inputs(inputs, threshold=1.0, round_to=4)  # min_keep keeps 1, round_to makes it 4
    assert [group_of(plan, bn).kept for bn in BNS] == [4, 4, 4]
    clamp = [w for w in plan.warnings if "below min_keep" in w]
    assert len(clamp) == 3 and all("kept the best 4 of " in w for w in clamp)
    assert any("c2.1" in w and "kept the best 4 of 16 channels" in w for w in clamp)


def test_prune_and_the_inspector_say_when_the_plan_cuts_far_less_than_asked(tmp_path, capsys):
    from engine import checkpoint
    from engine.cli import main
    from engine.trust import Trust
    from tui.widgets.inspector_state import PlanSettings, summary_text

    arch = checkpoint.arch_dict("test_slim_plan:MostlyFixed", 3, input_size=(3, 6, 6))
    model = checkpoint.build_model(arch, trust=Trust().allowing(arch["name"]))
    path = tmp_path / "fixed.pt"
    checkpoint.save(path, model, arch)
    assert main(["prune", str(path), "--percent", "0.5", "--allow-arch", arch["name"]]) == 0
    err = capsys.readouterr().err
    assert "asked to cut 50% of the prunable channels, this plan cuts" in err
    assert "48 channels in 2 layer(s): mean over dimension 1 combines them, in MostlyFixed" in err
    plan = make_plan(model, percent=0.5)
    shown = summary_text(plan, PlanSettings(percent=0.5)).plain
    assert "asked to cut 50%" in shown and "48 channels in 2 layer(s)" in shown
