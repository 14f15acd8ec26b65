"""The zoo (tests/zoo.py): every pattern public CNN code uses prunes at 50%, computes what the original
computes with the cut channels zeroed, and reloads exactly; what cannot be cut is refused with a reason,
within a bounded time."""

from __future__ import annotations

import copy
import io
import time

import pytest
import torch
from torch import nn

from engine import checkpoint
from engine.errors import PruneError
from engine.measure import count_flops, count_params
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import plan_from_inputs
from engine.slim.progress import TraceProgress
from engine.trust import Trust

import zoo

MASKED_RTOL = 1e-5  # pruned vs masked original, relative to the largest output (zoo.max_rel_diff)
RELOAD_TOL = 1e-6
SECONDS = 60.0  # a bound far above what any zoo model takes: a hang would blow it


@pytest.fixture(autouse=True)
def bounded(monkeypatch):
    monkeypatch.setenv("SLIMLAB_TRACE_SECONDS", str(SECONDS))
    monkeypatch.setenv("SLIMLAB_TRACE_MEMORY_MB", "2048")


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_model_prunes_at_half_equivalently_and_reloads(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.randomize(zoo.ZOO[name]())
    shape = zoo.input_size(name)
    start = time.monotonic()
    inputs = precompute(model, shape)
    plan = plan_from_inputs(inputs, percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)  # checked on a dummy batch inside
    assert time.monotonic() - start < SECONDS

    t = plan.totals
    removed = 1 - t["channels_after"] / t["channels_before"]
    assert removed > 0.3, (name, removed, plan.warnings)
    assert t["params_after"] == count_params(pruned)
    assert t["flops_after"] == count_flops(pruned, shape)
    for g in inputs.groups:
        assert g.prunable or g.reason, g  # whatever is left whole says why

    x = torch.randn(3, *shape)
    with torch.no_grad():
        out = pruned.eval()(x)
        ref = zoo.masked_copy(model, inputs.groups, plan).eval()(x)
    assert zoo.max_rel_diff(ref, out) <= MASKED_RTOL

    arch = checkpoint.arch_dict(f"zoo:{name}", 4 if name.startswith("Yolo") else 10)
    path = tmp_path / "pruned.pt"
    checkpoint.save(path, pruned, arch, plan=plan.to_dict())
    reloaded = checkpoint.load(path, trust=Trust().allowing(arch["name"])).model  # build, apply plan, load
    with torch.no_grad():
        assert zoo.max_rel_diff(out, reloaded(x)) <= RELOAD_TOL


def test_the_yolo_heads_are_left_whole_because_they_are_outputs():
    for name in ("YoloV5", "YoloV8"):
        model = zoo.randomize(zoo.ZOO[name]())
        groups = precompute(model, zoo.input_size(name)).groups
        heads = [g for g in groups if any(n.startswith("detect.") for n in g.convs) and not g.prunable]
        assert heads and all("model outputs" in g.reason for g in heads)
        neck = [g for g in groups if g.prunable]
        assert len(neck) > 20


def test_grouped_conv_and_channel_shuffle_cut_the_same_position_in_every_group():
    model = zoo.randomize(zoo.ShuffleNetG2())
    inputs = precompute(model, (3, 32, 32))
    g = next(g for g in inputs.groups if "layers.1.conv1.0" in g.convs)
    # 2 groups, then a shuffle, then 2 groups again: a position goes in every group on both sides
    assert g.prunable and g.width == 4 and g.total * g.width == 12
    plan = plan_from_inputs(inputs, percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    conv = pruned.get_submodule("layers.1.conv1.0")
    assert conv.groups == 2 and conv.out_channels % 2 == 0 and conv.out_channels < 12


def test_se_block_follows_the_expansion_channels():
    model = zoo.randomize(zoo.EfficientNetLite())
    groups = precompute(model, (3, 32, 32)).groups
    expand = next(g for g in groups if "blocks.1.expand.0" in g.convs)
    assert expand.prunable
    assert {"blocks.1.dw.0", "blocks.1.se2"} <= set(expand.convs)  # depthwise and excitation follow
    assert any(m.name == "blocks.1.se1" and m.side == "in" for m in expand.members)


def test_pre_activation_batchnorms_score_the_residual_stream():
    model = zoo.randomize(zoo.PreActResNet())
    groups = precompute(model, (3, 32, 32)).groups
    stream = next(g for g in groups if "conv1" in g.convs)
    assert stream.prunable and not stream.note
    assert {"layers.0.bn1", "layers.1.bn1", "layers.2.bn1"} <= set(stream.layers)


def test_dpn_cuts_both_paths_and_the_slice_position_it_keeps_follows():
    """`x[:, :d]` / `x[:, d:]` with d = self.out_planes: both parts are cut, and out_planes becomes
    the residual part's kept count (a literal d would be a fixed position: see the next test)."""
    model = zoo.randomize(zoo.DPN())
    inputs = precompute(model, (3, 32, 32))
    g = next(g for g in inputs.groups if "blocks.0.conv3.0" in g.convs)
    assert g.prunable and not g.fixed.any()
    plan = plan_from_inputs(inputs, percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    first = pruned.blocks[0]
    assert first.out_planes < 32 and first.conv3[0].out_channels < 40
    assert all(b.out_planes == first.out_planes for b in pruned.blocks[:3])  # one stage, one residual width
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = zoo.masked_copy(model, inputs.groups, plan).eval()(x)
        assert zoo.max_rel_diff(ref, pruned.eval()(x)) <= MASKED_RTOL


class _LiteralDPN(zoo.DPN):
    """The same blocks slicing at a number written in the code: a fixed position."""

    def __init__(self) -> None:
        super().__init__()
        for block in self.blocks:
            d = block.out_planes
            del block.out_planes
            block.forward = lambda x, block=block, d=d: _literal_forward(block, x, d)


def _literal_forward(block: nn.Module, x: torch.Tensor, d: int) -> torch.Tensor:
    out = block.conv3(torch.relu(block.conv2(torch.relu(block.conv1(x)))))
    x = block.shortcut(x) if block.shortcut is not None else x
    return torch.relu(torch.cat([x[:, :d] + out[:, :d], x[:, d:], out[:, d:]], 1))


def test_dpn_slicing_at_a_literal_position_keeps_the_channels_before_it():
    groups = precompute(zoo.randomize(_LiteralDPN()), (3, 32, 32)).groups
    g = next(g for g in groups if "blocks.0.conv3.0" in g.convs)
    assert g.prunable and g.fixed.sum() == 32 and "fixed channel positions" in g.note


def test_layers_computing_through_functional_ops_are_those_layers():
    """BatchNorm + act through F.batch_norm, a frozen BatchNorm in buffers, same-padding and mixed
    convs through F.conv2d, F.linear: each scores or cuts its channels; split counts follow."""
    torch.manual_seed(0)
    model = zoo.randomize(zoo.TimmStyle())
    inputs = precompute(model, (3, 32, 32))
    members = {m.name: m.kind for g in inputs.groups for m in g.members}
    assert members["stem.1"] == members["stage1.block.1"] == "bn"  # BatchNormAct, FrozenBN
    assert members["stem.0"] == members["stage1.mixed.0.1"] == "conv" and members["fc"] == "linear"
    assert not any(r for g in inputs.groups if g.prunable for r in g.unit_reasons)
    plan = plan_from_inputs(inputs, percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    for stage in (pruned.stage1, pruned.stage2):
        assert stage.expand_chs == stage.conv_exp[0].out_channels
        mixed = stage.mixed[0]
        assert list(mixed.splits) == [c.in_channels for c in mixed.values()]
    assert pruned.stage2.block[1].weight.numel() == pruned.stage2.block[0].out_channels < 32


def test_channel_selection_indexes_are_cut_with_their_channels():
    model = zoo.randomize(zoo.SlimPreResNet())
    inputs = precompute(model, (3, 32, 32))
    plan = plan_from_inputs(inputs, percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    block = pruned.layer2[0]
    assert block.select.indexes.numel() == block.bn1.num_features < model.layer2[0].bn1.num_features


class HardcodedHalves(nn.Module):
    """Splits channels at a constant stored in the module: an even split to look at, but the pruned
    model would still cut at the old position."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.half = 8
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.a(x[:, : self.half]), x[:, self.half :]], 1)
        return self.fc(x.mean((2, 3)))


def test_a_prune_that_would_break_the_model_is_refused_naming_the_group():
    model = zoo.randomize(HardcodedHalves())
    inputs = precompute(model, (3, 8, 8))
    stem = next(g for g in inputs.groups if "stem.0" in g.convs)
    plan = plan_from_inputs(inputs, percent=0.5)
    assert stem.prunable and any(g.root == stem.root and g.kept < g.total for g in plan.groups)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruneError, match=r"refusing this prune: cutting group \d+ \(root stem\.0") as err:
        apply_plan(model, plan)
    assert "dummy batch" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # left whole


def test_graph_building_stops_at_its_time_budget_naming_where(monkeypatch):
    monkeypatch.setenv("SLIMLAB_TRACE_SECONDS", "0")
    model = zoo.randomize(zoo.YoloV5())
    with pytest.raises(PruneError, match=r"took more than 0 s .*SLIMLAB_TRACE_SECONDS.*stopped at aten\.\w+ in `b0"):
        precompute(model, (3, 64, 64))


def test_graph_building_stops_at_its_memory_budget_naming_where(monkeypatch):
    monkeypatch.setenv("SLIMLAB_TRACE_MEMORY_MB", "0.001")
    model = zoo.randomize(zoo.ShuffleNetV2())
    with pytest.raises(PruneError, match=r"memory budget.*SLIMLAB_TRACE_MEMORY_MB"):
        precompute(model, (3, 32, 32))


def test_progress_is_reported_while_tracing():
    seen = []
    precompute(zoo.randomize(zoo.YoloV8()), (3, 64, 64), progress=lambda done, total, where: seen.append((done, total, where)))
    assert seen and seen[-1] == (seen[-1][1], seen[-1][1], "done")
    stream = io.StringIO()
    shown = TraceProgress(stream, after_s=0.0, every_s=0.0)  # what the shell sees when tracing is slow
    shown(3, 10, "`b0` (Conv)")
    shown(10, 10, "done")
    assert stream.getvalue() == "tracing channels: 3/10 modules, 0 s, in `b0` (Conv)\n"
    quiet = io.StringIO()
    TraceProgress(quiet)(3, 10, "`b0` (Conv)")  # quick traces print nothing
    assert quiet.getvalue() == ""


class NeedsHalf(nn.Module):
    """Fails on a float32 input for a reason that is not its size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.check = nn.Identity()
        self.fc = nn.Linear(8 * 16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.dtype != torch.float16:
            raise TypeError("this model runs in half precision only")
        return self.fc(x.flatten(1))


def test_a_forward_that_fails_says_where_and_why_and_hints_input_size_only_for_sizes():
    with pytest.raises(PruneError) as err:
        precompute(NeedsHalf().eval(), (3, 16, 16))
    text = str(err.value)
    assert "dummy input of shape (1, 3, 16, 16) failed" in text and "half precision only" in text
    assert "--input-size" not in text  # the real cause, not a size hint
    with pytest.raises(PruneError, match=r"failed in `classifier` \(Linear\).*--input-size CxHxW \(now 3x64x64\)"):
        precompute(zoo.randomize(zoo.VGG()), (3, 64, 64))  # the classifier is sized for 32x32


def test_prune_refuses_to_write_a_model_that_fails_its_dummy_batch(tmp_path, capsys):
    from engine.cli import ExitCode, main

    arch = checkpoint.arch_dict("test_slim_zoo:HardcodedHalves", 3, input_size=(3, 8, 8))
    model = zoo.randomize(checkpoint.build_model(arch, trust=Trust().allowing(arch["name"])))
    path, out = tmp_path / "halves.pt", tmp_path / "pruned.pt"
    checkpoint.save(path, model, arch)
    code = main(["prune", str(path), "--percent", "0.5", "--allow-arch", arch["name"], "--out", str(out)])
    assert code == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "refusing this prune: cutting group" in err and "root stem.0" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["halves.pt"]  # no pruned model, no plan
