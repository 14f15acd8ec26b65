"""timm's CNNs (the detection environment has timm) slim as asked: each module kind timm builds them
from is followed by what it computes, every cut computes what the original computes with the cut
channels zeroed, reloads exactly, and what stays whole says truly why."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from engine import checkpoint
from engine.measure import count_flops, count_params

import zoo

pytestmark = pytest.mark.detect

SHAPE = (3, 64, 64)  # small inputs keep tracing quick; the channel structure is the same as at 224
MASKED_RTOL = 1e-5
NO_BN = "no BatchNorm scores them"


def timm_model(name: str, **kwargs) -> nn.Module:
    from engine.models import build

    torch.manual_seed(0)
    return randomize(build(f"timm:{name}", 10, **kwargs))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """|gamma| spread like after sparse training, on every BatchNorm (frozen ones keep it in a buffer)."""
    from engine.slim.gamma import is_batch_norm

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if is_batch_norm(m) and getattr(m, "weight", None) is not None:
                n = m.weight.numel()
                m.weight.copy_(torch.from_numpy(rng.lognormal(-2.0, 1.0, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
    return model.eval()


def plan_for(model: nn.Module, score: str = "max"):
    from engine.slim.inputs import precompute
    from engine.slim.plan import plan_from_inputs

    inputs = precompute(model, SHAPE, score=score)
    return inputs, plan_from_inputs(inputs, percent=0.5, round_to=8, score=score)


def assert_reasons_true(model: nn.Module, inputs) -> None:
    """Every BatchNorm (subclass, sync, frozen) that ran scores a group, and a unit said to have no
    BatchNorm has none holding it."""
    from engine.slim.gamma import is_batch_norm

    members = {m.name for g in inputs.groups for m in g.members if m.kind == "bn"}
    bns = {n for n, m in model.named_modules() if is_batch_norm(m)}
    assert bns == members, sorted(bns ^ members)[:5]
    for g in inputs.groups:
        held = np.zeros(g.total, bool)
        for m in g.members:
            if m.kind == "bn" and m.side == "out":
                held[m.root_idxs] = True
        said = np.array([r == NO_BN for r in g.unit_reasons], bool)
        assert not (said & held).any(), g.root


def prune_and_check(model: nn.Module, inputs, plan) -> nn.Module:
    from engine.slim.apply import apply_plan

    pruned = apply_plan(copy.deepcopy(model), plan)  # checked on a dummy batch inside
    assert count_params(pruned) == plan.totals["params_after"]
    assert count_flops(pruned, SHAPE) == plan.totals["flops_after"]
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        ref = zoo.masked_copy(model, inputs.groups, plan).eval()(x)
        assert zoo.max_rel_diff(ref, pruned.eval()(x)) <= MASKED_RTOL
    return pruned


def flops_removed(plan) -> float:
    return 1 - plan.totals["flops_after"] / plan.totals["flops_before"]


@pytest.mark.parametrize("name", [
    "mobilenetv3_large_100",  # BatchNormAct2d, squeeze-excite with hard sigmoid, timm's Linear head
    "tf_mixnet_s",            # same-padding convs, mixed-kernel convs splitting by their `splits`
    "dpn68",                  # dual paths sliced at the block's `num_1x1_c`
    "cspresnet50",            # cross-stage split by `expand_chs // 2`
    "rexnet_100",             # residual added to the first `in_channels` channels
    "ghostnet_100",           # ghost modules sliced to `out_chs`, SE, conv head without BatchNorm
])
def test_timm_model_prunes_equivalently_and_reloads(name, tmp_path):
    model = timm_model(name)
    inputs, plan = plan_for(model)
    assert flops_removed(plan) >= 0.4, (name, flops_removed(plan), plan.warnings)
    assert_reasons_true(model, inputs)
    pruned = prune_and_check(model, inputs, plan)
    path = tmp_path / "p.pt"
    checkpoint.save(path, pruned, checkpoint.arch_dict(f"timm:{name}", 10), plan=plan.to_dict())
    again = checkpoint.load(path).model  # built from the registry name, cut to the plan, loaded
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert (again.eval()(x) - pruned(x)).abs().max().item() == 0.0


def test_mixed_kernel_conv_splits_follow_what_each_part_keeps():
    from timm.layers import Conv2dSame, MixedConv2d

    model = timm_model("tf_mixnet_s")
    inputs, plan = plan_for(model)
    convs = {m.name for g in inputs.groups for m in g.members if m.kind == "conv"}
    same = [n for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    assert same and set(same) <= convs  # the functional conv of a same-padding conv is that layer
    pruned = prune_and_check(model, inputs, plan)
    mixed = [m for m in pruned.modules() if isinstance(m, MixedConv2d)]
    assert mixed
    for m in mixed:
        assert list(m.splits) == [c.in_channels for c in m.values()] and min(m.splits) >= 1
    assert any(m.splits != o.splits for m, o in zip(mixed, (o for o in model.modules() if isinstance(o, MixedConv2d)),
                                                     strict=True))


def test_dpn_cuts_within_each_path_and_its_split_position_follows():
    model = timm_model("dpn68")
    inputs, plan = plan_for(model)
    assert not any("fixed channel positions" in (r or "") for g in inputs.groups for r in g.unit_reasons)
    pruned = prune_and_check(model, inputs, plan)
    before = {n: m.num_1x1_c for n, m in model.named_modules() if hasattr(m, "num_1x1_c")}
    after = {n: m.num_1x1_c for n, m in pruned.named_modules() if hasattr(m, "num_1x1_c")}
    assert all(after[n] <= before[n] for n in before) and any(after[n] < before[n] for n in before)


def test_repvgg_branches_and_identity_batchnorm_are_one_group_per_stage():
    model = timm_model("repvgg_a0")
    inputs, plan = plan_for(model)
    stage = next(g for g in inputs.groups if "stages.1.0.conv_kxk.conv" in g.convs)
    blocks = [n for n, _ in model.stages[1].named_children()]
    for b in blocks:  # every branch of every block: 3x3, 1x1 and the identity BatchNorm where there is one
        assert f"stages.1.{b}.conv_kxk.conv" in stage.convs and f"stages.1.{b}.conv_1x1.conv" in stage.convs
    assert {f"stages.1.{b}.identity" for b in blocks[1:]} <= set(stage.layers)
    # scored by the max |gamma| of a dozen independent BatchNorms the stage keeps nearly whole: the plan says so
    if flops_removed(plan) < 0.25:
        assert any("BatchNorms holding it" in w and "score 'l2'" in w for w in plan.warnings), plan.warnings
    inputs, l2 = plan_for(model, score="l2")
    assert flops_removed(l2) > flops_removed(plan)
    prune_and_check(model, inputs, l2)


def test_sync_and_frozen_batchnorm_act_variants_are_batchnorms():
    from timm.layers import (
        FrozenBatchNormAct2d,
        SyncBatchNormAct,
        convert_sync_batchnorm,
        freeze_batch_norm_2d,
    )

    base = timm_model("mobilenetv3_small_050")
    _, ref = plan_for(base)
    for convert, kind in ((convert_sync_batchnorm, SyncBatchNormAct), (freeze_batch_norm_2d, FrozenBatchNormAct2d)):
        model = convert(copy.deepcopy(base)).eval()
        assert any(isinstance(m, kind) for m in model.modules())
        inputs, plan = plan_for(model)
        assert_reasons_true(model, inputs)
        assert [g.kept_idxs for g in plan.groups] == [g.kept_idxs for g in ref.groups]
        prune_and_check(model, inputs, plan)


def test_eca_attention_across_channels_is_the_reason_they_stay():
    model = timm_model("ecaresnet26t")
    inputs, plan = plan_for(model)
    reasons = {r for g in inputs.groups for r in g.unit_reasons if r}
    assert any("ECA attention" in r and "se.conv" in r for r in reasons)
    assert flops_removed(plan) >= 0.4
    prune_and_check(model, inputs, plan)


def test_classifier_head_wrappers_pool_and_concatenate_channels_that_are_cut():
    model = timm_model("resnet18d", global_pool="catavgmax")  # SelectAdaptivePool2d: avg and max, concatenated
    inputs, plan = plan_for(model)
    assert model.default_ignore == ["fc"] and model.input_size == (3, 224, 224)
    assert flops_removed(plan) >= 0.4
    pruned = prune_and_check(model, inputs, plan)
    assert pruned.fc.in_features == 2 * pruned.layer4[-1].bn2.num_features


def test_timm_arch_is_built_from_its_name_only():
    from engine.errors import ModelError
    from engine.models import build

    with pytest.raises(ModelError, match="pretrained"):
        build("timm:resnet18d", 10, pretrained=True)
    with pytest.raises(ModelError, match="checkpoint_path"):
        build("timm:resnet18d", 10, checkpoint_path="weights.pth")
    with pytest.raises(ModelError, match="timm:resnet18d"):
        build("timm:resnet18dd", 10)


def test_slimlab_prune_takes_a_timm_state_dict(tmp_path, capsys):
    from engine.cli import ExitCode, main

    model = timm_model("resnet18d")
    path = tmp_path / "r.pth"
    torch.save(model.state_dict(), path)
    out = tmp_path / "r-pruned.pt"
    assert main(["prune", str(path), "--arch", "timm:resnet18d", "--percent", "0.5", "--round-to", "8",
                 "--input-size", "3x64x64", "--out", str(out)]) == ExitCode.OK
    plan = json.loads((tmp_path / "r-pruned.plan.json").read_text())
    loaded = checkpoint.load(out)  # a registry name: built without --allow-arch
    assert sum(p.numel() for p in loaded.model.parameters()) == plan["totals"]["params_after"]
    assert loaded.model(torch.zeros(1, *SHAPE)).shape == (1, 10)


def test_a_preset_trains_and_prunes_a_timm_model(tmp_path, tiny_preset):
    from engine.cli import prepare_run_dir
    from engine.config import load_preset
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    preset = tiny_preset(model={"arch": "timm:mobilenetv3_small_050", "kwargs": {"drop_rate": 0.1}},
                         training__epochs=1,
                         stages=[{"type": "train"}, {"type": "prune", "percent": 0.5, "round_to": 8}])
    spec = load_preset(preset)
    path = create_run_dir(tmp_path / "runs", "timm")
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["prune"]["params"] < summary["train"]["params"]
    pruned = checkpoint.load(path / "weights" / "prune.pt")  # timm: rebuilt from its name, cut to its plan
    assert sum(p.numel() for p in pruned.model.parameters()) == summary["prune"]["params"]
