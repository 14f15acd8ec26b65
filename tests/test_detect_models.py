"""Ultralytics detection models: plan == cut, reload equivalence, exact figures, checkpoints, bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from detect_helpers import mask_pruned, randomise_bn

from engine import checkpoint
from engine.detect.model import arch_of, build, load_yaml
from engine.errors import CheckpointError, ModelError
from engine.slim.apply import apply_plan
from engine.slim.inputs import precompute
from engine.slim.plan import plan_from_inputs

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]


IMGSZ = 64
MODELS = ["yolov8n.yaml", "yolov5nu.yaml", "yolo11n.yaml"]


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)[0]


def test_pruned_model_is_a_plain_ultralytics_model_with_consistent_blocks():
    torch.manual_seed(0)
    model = build("ultralytics:yolov8n.yaml", 3, imgsz=IMGSZ)
    randomise_bn(model)
    plan = plan_from_inputs(precompute(model), percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert {type(m).__module__.split(".")[0] for m in pruned.modules()} <= {"ultralytics", "torch"}
    from ultralytics.nn.modules import C2f

    blocks = [m for m in pruned.modules() if isinstance(m, C2f)]
    assert blocks and sum(b.cv1.conv.out_channels for b in blocks) < sum(
        m.cv1.conv.out_channels for m in model.modules() if isinstance(m, C2f))
    # both halves of cv1 lose the same positions (chunk(2) stays even), and `c` follows the cut, so
    # Ultralytics' own split-based forward (what its exporter uses) computes the same outputs
    assert all(b.c * 2 == b.cv1.conv.out_channels for b in blocks)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    ref = outputs(pruned, x)
    for b in blocks:
        b.forward = b.forward_split
    assert (outputs(pruned, x) - ref).abs().max().item() == 0.0


def test_plan_figures_at_a_large_input_are_exact_without_running_it():
    """Traced at 64 px, counted at small sizes: the plan's FLOPs at 320 px are the cut model's."""
    from engine.measure import count_flops, count_params

    torch.manual_seed(0)
    model = build("ultralytics:yolo11n.yaml", 3, imgsz=320, width=0.25)
    randomise_bn(model)
    inputs = precompute(model)
    from engine.slim.trace import trace_for

    assert inputs.input_shape == (3, 320, 320) and trace_for(model, (3, 320, 320)).input_shape == (3, 64, 64)
    plan = plan_from_inputs(inputs, percent=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert plan.totals["flops_before"] == count_flops(model, (3, 320, 320))
    assert plan.totals["flops_after"] == count_flops(pruned, (3, 320, 320))
    assert plan.totals["params_after"] == count_params(pruned)


@pytest.mark.parametrize("name", MODELS)
def test_plan_equals_cut_and_the_pruned_checkpoint_reloads_exactly(name, tmp_path):
    torch.manual_seed(0)
    model = build(f"ultralytics:{name}", 3, imgsz=IMGSZ, names=["a", "b", "c"]).eval()
    randomise_bn(model)
    inputs = precompute(model)
    plan = plan_from_inputs(inputs, percent=0.5)
    head = len(model.model) - 1
    ignored = {g.root for g in plan.groups if g.ignored}
    assert f"model.{head}.cv2.0.2" in ignored or any(r.startswith(f"model.{head}.cv2.") for r in ignored)
    # the Detect head's box, class and DFL outputs keep every channel; the neck features feeding the
    # head are not outputs of the deployed model, so they prune like any layer
    for g in plan.groups:
        if any(c.startswith(f"model.{head}.") and c.endswith(".2") for c in g.convs):
            assert g.kept == g.total and g.ignored
    assert not [g.root for g in plan.groups if "model outputs" in (g.reason or "")]
    pruned = apply_plan(copy.deepcopy(model), plan)
    from engine.measure import count_flops, count_params

    assert count_params(pruned) == plan.totals["params_after"] < 0.6 * plan.totals["params_before"]
    assert count_flops(pruned, (3, IMGSZ, IMGSZ)) == plan.totals["flops_after"]
    # plan == cut: the pruned model computes what the full model computes with the cut channels silenced
    masked = copy.deepcopy(model)
    mask_pruned(masked, inputs, plan)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    assert (outputs(masked, x) - outputs(pruned, x)).abs().max().item() <= 1e-4
    # the checkpoint is plain data (weights_only) and rebuilds the same model without unpickling code
    path = tmp_path / "pruned.pt"
    checkpoint.save(path, pruned, arch_of(model, name), plan=plan.to_dict())
    raw = torch.load(path, weights_only=True)
    assert raw["arch"]["kwargs"]["names"] == ["a", "b", "c"] and raw["arch"]["num_classes"] == 3
    assert isinstance(raw["arch"]["kwargs"]["yaml"], dict) and raw["plan"]["groups"]
    again = checkpoint.load(path).model
    assert (outputs(again, x) - outputs(pruned, x)).abs().max().item() == 0.0
    assert again.names == {0: "a", 1: "b", 2: "c"}


def test_ultralytics_checkpoint_needs_trust_then_becomes_a_slimlab_model(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    module = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    randomise_bn(module)
    module.names = {0: "cat", 1: "dog"}
    path = tmp_path / "best.pt"
    torch.save({"model": copy.deepcopy(module).half(), "ema": None, "train_args": {"imgsz": 96}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="--trust"):
        checkpoint.load(path)
    loaded = checkpoint.load(path, trust=True)
    assert loaded.source == "ultralytics" and loaded.arch["task"] == "detect"
    assert loaded.arch["kwargs"]["names"] == ["cat", "dog"] and loaded.model.input_size == (3, 96, 96)
    x = torch.rand(1, 3, 96, 96)
    ref = outputs(copy.deepcopy(module).half().float(), x)
    assert (outputs(loaded.model, x) - ref).abs().max().item() <= 1e-4
    # kept as slimlab's: no pickle needed from here on
    out = tmp_path / "slim.pt"
    checkpoint.save(out, loaded.model, loaded.arch)
    assert (outputs(checkpoint.load(out).model, x) - outputs(loaded.model, x)).abs().max().item() == 0.0


def test_other_ultralytics_tasks_are_named(tmp_path):
    from ultralytics.nn.tasks import SegmentationModel

    path = tmp_path / "seg.pt"
    torch.save({"model": SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False)}, path)
    with pytest.raises(CheckpointError, match="segment model"):
        checkpoint.load(path, trust=True)
    with pytest.raises(ModelError, match="pose model"):
        build("ultralytics:yolov8n-pose.yaml", 2)


def test_model_yaml_that_does_not_exist_and_unsafe_yamls():
    with pytest.raises(ModelError, match="no such model yaml.*yolov8n.yaml"):
        build("ultralytics:yolov8q.yaml", 2)
    with pytest.raises(ModelError, match="URLs are never fetched"):
        build("ultralytics:https://example.com/x.yaml", 2)
    cfg = load_yaml("yolov8n.yaml")
    evil = copy.deepcopy(cfg)
    evil["backbone"][0][2] = "attempt_load_one_weight"  # a function in Ultralytics' namespace, not a layer
    with pytest.raises(ModelError, match="not an Ultralytics or torch.nn layer"):
        build("ultralytics:yolov8n.yaml", 2, yaml=evil)
    evil = copy.deepcopy(cfg)
    evil["activation"] = "__import__('os').system('true')"
    with pytest.raises(ModelError, match="activation"):
        build("ultralytics:yolov8n.yaml", 2, yaml=evil)
