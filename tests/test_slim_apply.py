"""apply_plan: cuts exactly the planned channels on every built-in and a user model, keeps outputs,
round-trips through JSON onto a fresh model, and refuses plans that do not match."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine.errors import PruneError
from engine.measure import count_flops, count_params
from engine.slim.apply import apply_plan
from engine.slim.groups import find_groups, is_depthwise, layer_kind
from engine.slim.inputs import precompute
from engine.slim.plan import PrunePlan, plan_from_inputs

from helpers import SMALL_SLIMMABLE as SMALL


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, padding=k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.bn(self.conv(x)))


class UserNet(nn.Module):
    """A user-defined net (no registry attributes): residual add, concat, depthwise conv, conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, 12, 3)
        self.a = Conv(12, 8, 3)
        self.b = Conv(12, 8, 1)
        self.mix = Conv(16, 12, 1)
        self.dw = Conv(12, 12, 3, g=12)
        self.out = nn.Conv2d(12, 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.mix(torch.cat([self.a(x), self.b(x)], 1))
        return self.out(self.dw(x)).mean((2, 3))


class ConcatBN(nn.Module):
    """Concat followed by BatchNorm and a depthwise conv: the two branch convs each hold part of one group."""

    def __init__(self) -> None:
        super().__init__()
        self.a = Conv(3, 6, 3)
        self.b = Conv(3, 10, 3)
        self.bn = nn.BatchNorm2d(16)
        self.dw = Conv(16, 16, 3, g=16)
        self.head = Conv(16, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(self.head(self.dw(x)).mean((2, 3)))


USER = {"user": UserNet, "concat_bn": ConcatBN}


def build(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = USER[arch]() if arch in USER else models.build(arch, 10, **SMALL[arch])
    return randomize(model, seed)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Spread |gamma| (log-normal, like after sparse training) and BN statistics."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.weight.copy_(
                    torch.from_numpy(rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32))
                )
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def shape_of(arch: str) -> tuple[int, ...]:
    return (3, 12, 12) if arch in USER else tuple(build(arch).input_size)


def pruned_local(groups, plan, name: str, side: str, n: int) -> np.ndarray:
    """Channels of layer `name` (`side`) that the plan cuts, found from the unpruned model's groups."""
    cut = np.zeros(n, dtype=bool)
    by_root = {g.root: g for g in plan.groups}
    for g in groups:
        pg = by_root[g.root]
        gone = np.setdiff1d(np.arange(g.total), pg.kept_idxs)
        for m in g.members:
            if m.name == name and m.side == side:
                cut[m.idxs[np.isin(m.root_idxs, gone)]] = True
    return cut


def masked(model: nn.Module, groups, plan) -> nn.Module:
    """Zero gamma and beta of every cut channel: with act(0) = 0 this computes what the cut model does."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, m in model.named_modules():
            if layer_kind(m) == "bn":
                cut = torch.from_numpy(pruned_local(groups, plan, name, "out", m.num_features))
                m.weight[cut] = 0
                m.bias[cut] = 0
    return model


ARCHS = [*sorted(SMALL), *USER]


@pytest.mark.parametrize("arch", ARCHS)
def test_apply_cuts_exactly_the_plan(arch):
    model = build(arch)
    shape = shape_of(arch)
    inputs = precompute(model, shape)
    plan = plan_from_inputs(inputs, percent=0.5, round_to=2)
    assert plan.pruned_groups
    groups = find_groups(model, shape)
    original = {n: copy.deepcopy(m) for n, m in model.named_modules()}
    pruned = apply_plan(copy.deepcopy(model), plan)

    x = torch.randn(4, *shape)
    with torch.no_grad():
        ref, out = model(x), pruned(x)
        # the cut model computes what the model with those channels silenced computes
        torch.testing.assert_close(out, masked(model, groups, plan)(x), rtol=1e-4, atol=1e-5)
    assert out.shape == ref.shape
    assert plan.totals["params_after"] == count_params(pruned)
    assert plan.totals["flops_after"] == count_flops(pruned, shape)

    for name, m in pruned.named_modules():
        kind = layer_kind(m)
        if kind == "other" or not name:
            continue
        old = original[name]
        w_old = old.weight.detach()
        n_out = w_old.shape[0]
        keep_out = ~pruned_local(groups, plan, name, "out", n_out)
        expect = w_old[torch.from_numpy(keep_out)]
        if kind == "linear" or (kind == "conv" and not is_depthwise(old)):
            keep_in = ~pruned_local(
                groups, plan, name, "in", w_old.shape[1] * getattr(old, "groups", 1)
            )
            expect = expect[:, torch.from_numpy(keep_in)]
        torch.testing.assert_close(m.weight.detach(), expect, rtol=0, atol=0, msg=name)
        if kind == "bn":
            torch.testing.assert_close(m.running_var, old.running_var[torch.from_numpy(keep_out)])
    for pattern in getattr(model, "default_ignore", []):
        # the classifier keeps every output (its inputs follow the last group's cut, checked above)
        head, old_head = pruned.get_submodule(pattern), model.get_submodule(pattern)
        assert head.out_features == old_head.out_features
        torch.testing.assert_close(head.bias, old_head.bias, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["resnet_cifar", "c3net", "user", "concat_bn"])
def test_plan_json_onto_a_fresh_model_gives_identical_outputs(arch):
    model = build(arch)
    shape = shape_of(arch)
    plan = plan_from_inputs(precompute(model, shape), percent=0.6, min_keep=2)
    first = apply_plan(copy.deepcopy(model), plan)
    with torch.no_grad():
        for p in first.parameters():
            p.add_(0.01 * torch.randn_like(p))  # as if finetuned after pruning
    saved = json.loads(json.dumps(plan.to_dict()))

    fresh = apply_plan(build(arch, seed=123), PrunePlan.from_dict(saved))
    fresh.load_state_dict(first.state_dict())
    x = torch.randn(3, *shape)
    with torch.no_grad():
        diff = (fresh.eval()(x) - first.eval()(x)).abs().max().item()
    assert diff <= 1e-6


def test_nothing_to_cut_leaves_the_model_alone():
    model = build("resnet_cifar")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_from_inputs(precompute(model), percent=0.0)
    assert not plan.pruned_groups
    apply_plan(model, plan)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_apply_keeps_train_mode_and_running_stats():
    model = build("vgg").train()
    plan = plan_from_inputs(precompute(model), percent=0.3)
    bn = model.get_submodule(plan.pruned_groups[0].layers[0])
    stats = bn.running_mean.clone()
    apply_plan(model, plan)
    assert model.training and bn.training
    torch.testing.assert_close(bn.running_mean, stats[plan.pruned_groups[0].kept_idxs])


def test_plan_for_another_width_names_layer_and_counts():
    plan = plan_from_inputs(precompute(build("resnet_cifar")), percent=0.5)
    wider = models.build("resnet_cifar", 10, width=0.5)
    with pytest.raises(
        PruneError,
        match=r"layer '[\w.]+' has (\d+) output channels in the model but \d+ in the plan",
    ) as err:
        apply_plan(wider, plan)
    wide, narrow = (
        int(n) for n in re.findall(r"(\d+) (?:output channels|in the plan)", str(err.value))
    )
    assert wide == 2 * narrow


def test_missing_layer_and_already_pruned_model_are_refused():
    model = build("vgg")
    plan = plan_from_inputs(precompute(model), percent=0.5)
    d = plan.to_dict()
    g = next(g for g in d["groups"] if g["kept"] < g["total"])
    layer = g["layers"][0]
    g["sizes"]["features.nope"] = g["sizes"].pop(layer)
    with pytest.raises(PruneError, match="'features.nope'.*not in"):
        apply_plan(copy.deepcopy(model), PrunePlan.from_dict(d))
    apply_plan(model, plan)
    with pytest.raises(PruneError, match="already pruned"):
        apply_plan(model, plan)


def test_ignored_group_that_cuts_is_refused():
    model = build("vgg")
    d = plan_from_inputs(precompute(model), percent=0.5).to_dict()
    next(g for g in d["groups"] if g["kept"] < g["total"])["ignored"] = True
    with pytest.raises(PruneError, match="ignored"):
        apply_plan(model, PrunePlan.from_dict(d))


class Plain(nn.Module):
    def __init__(self, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.c1, self.c2, self.c3 = Conv(3, 8, 3), Conv(8, 6, 3), Conv(6, 8, 3)
        self.fc = nn.Linear(8, 2)
        self.default_ignore = ["fc"]
        self.input_size = (3, 6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        z = self.c3(self.c2(y))
        return self.fc((z + y if self.residual else z).mean((2, 3)))


def test_plan_whose_coupling_differs_is_refused_before_cutting():
    plan = plan_from_inputs(precompute(randomize(Plain(residual=False))), percent=0.5)
    assert plan.pruned_groups
    coupled = Plain(residual=True)
    before = {k: v.clone() for k, v in coupled.state_dict().items()}
    with pytest.raises(PruneError, match="does not couple"):
        apply_plan(coupled, plan)
    assert all(torch.equal(v, before[k]) for k, v in coupled.state_dict().items())


def test_a_version_1_plan_still_applies_and_refuses_composition():
    """Plans saved before units: kept_idxs are channels of the root layer."""
    from engine.slim.compose import compose

    model = build("resnet_cifar")
    plan = plan_from_inputs(precompute(model), percent=0.5)
    d = plan.to_dict()
    d["version"] = 1
    for g in d["groups"]:
        g.pop("width")
    old = PrunePlan.from_dict(d)
    a, b = apply_plan(copy.deepcopy(model), plan), apply_plan(copy.deepcopy(model), old)
    x = torch.randn(2, *shape_of("resnet_cifar"))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    with pytest.raises(PruneError, match="older slimlab"):
        compose(old, plan)


def test_apply_reuses_the_trace_of_the_model_precompute_traced():
    from engine.slim.trace import trace_for

    model = build("resnet_cifar")
    shape = shape_of("resnet_cifar")
    plan = plan_from_inputs(precompute(model), percent=0.5)
    first = trace_for(model, shape)
    assert trace_for(model, shape) is first  # unchanged: precompute's trace serves apply
    apply_plan(model, plan)
    assert trace_for(model, shape) is not first  # cut: a new structure is traced anew


def test_composition_keeps_the_first_cut_of_a_group_the_second_leaves_whole():
    """A group the second prune does not cut may be traced into other units at the new width: the
    composed plan keeps the first plan's decision for it instead of refusing."""
    from dataclasses import replace

    from engine.slim.compose import compose

    model = build("resnet_cifar")
    first = plan_from_inputs(precompute(model), percent=0.3)
    pruned = apply_plan(copy.deepcopy(model), first)
    second = plan_from_inputs(precompute(pruned), percent=0.2)
    whole = next(i for i, g in enumerate(second.groups) if g.kept_idxs)
    g = second.groups[whole]
    # the same group, uncut, counted in one more unit than the first plan kept
    second.groups[whole] = replace(g, total=g.total + 1, kept_idxs=list(range(g.total + 1)))
    both = compose(first, second)
    assert both.groups[whole].kept_idxs == first.groups[whole].kept_idxs
    cut = next(i for i, g in enumerate(second.groups) if i != whole and len(g.kept_idxs) < g.total)
    assert both.groups[cut].kept_idxs == [first.groups[cut].kept_idxs[i] for i in second.groups[cut].kept_idxs]
    with pytest.raises(PruneError, match="has .* channels in the second plan"):
        bad = replace(second.groups[cut], total=second.groups[cut].total + 1)
        compose(first, replace(second, groups=[*second.groups[:cut], bad, *second.groups[cut + 1:]]))
