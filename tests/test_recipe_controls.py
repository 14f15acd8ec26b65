"""The recipe's controls and its finetune on a real tiny run: learning-rate rewinding, the uniform-width
control (width matched to the pruned FLOPs, trained, reported, never the run's model), the controls'
epoch rules, the verdict line, and the run's headline (the deployed model's accuracy) on the workbench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY

from engine import checkpoint, runs
from engine.cli import prepare_run_dir
from engine.config import load_preset, spec_from_dict
from engine.errors import PresetError
from engine.pipeline import Pipeline
from engine.progress import verdict
from engine.train import lr_factor

from helpers import run_preset

STAGES = [
    {"type": "train", "training": {"epochs": 2}},
    {"type": "prune", "percent": 0.5},
    {"type": "finetune", "rewind": True, "teacher": "original", "training": {"epochs": 1}},
    {"type": "scratch", "epochs_rule": "flops"},
    {"type": "uniform"},
]


@pytest.fixture(scope="module")
def control_run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("controls")
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["data"]["test_fraction"] = 0.25
    data["training"].update(epochs=2, warmup_epochs=0.5, lr=0.08)
    data["stages"] = STAGES
    preset = tmp / "tiny.yaml"
    preset.write_text(yaml.safe_dump(data))
    return run_preset(preset, tmp / "runs", "controls")


def summary_of(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_rewind_takes_the_original_schedule_and_refuses_its_own_lr(tiny_preset):
    spec = load_preset(tiny_preset(training={"epochs": 6, "lr": 0.1, "warmup_epochs": 1.5, "schedule": "cosine",
                                             "batch_size": 32, "device": "cpu"},
                                   stages=[{"type": "train", "training": {"lr": 0.05, "schedule": "step"}},
                                           {"type": "prune", "percent": 0.5},
                                           {"type": "finetune", "rewind": True, "training": {"epochs": 2}},
                                           {"type": "finetune", "name": "own", "training": {"epochs": 2, "lr": 0.01}},
                                           {"type": "finetune", "name": "default", "training": {"epochs": 2}},
                                           {"type": "finetune", "name": "off", "rewind": False,
                                            "training": {"epochs": 2}}]))
    rewound = spec.training_for(spec.stages[2])
    # the train stage's lr and shape, over the finetune's 2 epochs; the warm-up in proportion (1.5 of 6)
    assert (rewound.lr, rewound.schedule, rewound.epochs, rewound.warmup_epochs) == (0.05, "step", 2, 0.5)
    own = spec.training_for(spec.stages[3])  # an lr of its own: no rewinding
    assert (own.lr, own.schedule, own.warmup_epochs) == (0.01, "cosine", 1.5)
    assert spec.training_for(spec.stages[4]) == rewound  # unset and no lr of its own: rewinding, the default
    off = spec.training_for(spec.stages[5])
    assert (off.lr, off.schedule, off.warmup_epochs) == (0.1, "cosine", 1.5)
    with pytest.raises(PresetError) as e:
        load_preset(tiny_preset(stages=[{"type": "train"}, {"type": "prune", "percent": 0.5},
                                        {"type": "finetune", "rewind": True, "training": {"lr": 0.01}}]))
    assert "rewind: true replays the original schedule" in str(e.value) and "training.lr" in str(e.value)


def test_rewound_finetune_steps_follow_the_original_schedule(control_run):
    path, _ = control_run
    spec = load_preset(path / "spec.yaml")
    cfg = spec.training_for(spec.stages[2])
    assert cfg.lr == 0.08 and cfg.warmup_epochs == 0.25 and cfg.epochs == 1  # the train stage's 0.5 of 2 epochs, x 1/2
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r.get("stage") == "finetune" and "epoch_time" not in r and "lr" in r]
    assert steps
    per_epoch = -(-192 // 32)  # shapes 256 images, 25% held out as test
    total, warmup = cfg.epochs * per_epoch, round(cfg.warmup_epochs * per_epoch)
    for r in steps:
        assert r["lr"] == pytest.approx(cfg.lr * lr_factor(r["step"], total, warmup, cfg))
    assert "finetune: rewind: the original schedule over 1 epochs: lr 0.08" in (path / "log.txt").read_text()
    assert summary_of(path)["finetune"]["rewind"] is True


def test_uniform_control_matches_the_pruned_flops_and_never_becomes_the_model(control_run):
    path, out = control_run
    summary = summary_of(path)
    pruned, uniform = summary["finetune"], summary["uniform"]
    assert uniform["control"] == "uniform" and 0 < uniform["width"] < 1
    assert uniform["epochs"] == uniform["chain_epochs"] == 2 + 1  # equal epochs: train + finetune
    assert abs(uniform["flops"] - pruned["flops"]) / pruned["flops"] < 0.15
    assert uniform["pruned_flops"] == json.loads((path / "plan.json").read_text())["totals"]["flops_after"]

    # one width for every group: each keeps ceil(width * its channels), no group is left whole
    plan = checkpoint.load(path / "weights" / "uniform.pt").plan
    width = plan["options"]["uniform"]["width"]
    for g in plan["groups"]:
        if not g["ignored"]:
            assert len(g["kept_idxs"]) == max(1, int(np.ceil(width * g["total"] - 1e-9)))
    # the closest step: one channel more per group would be further from the pruned FLOPs
    reached = plan["options"]["uniform"]["reached"]
    assert abs(reached - plan["options"]["uniform"]["goal_flops"]) < 0.1

    # trained from random initialisation and reported, but the run's model stays the finetuned one
    assert set(summary["comparison"]) == {"train", "prune", "finetune", "scratch", "uniform"}
    assert summary["comparison"]["uniform"]["control"] == "uniform"
    assert (path / "weights" / "best.pt").read_bytes() == (path / "weights" / "finetune.pt").read_bytes()
    finetuned = checkpoint.load(path / "weights" / "finetune.pt").model
    assert checkpoint.load(path / "weights" / "best.pt").model.state_dict().keys() == finetuned.state_dict().keys()
    log = (path / "log.txt").read_text()
    assert "uniform: the unpruned architecture at width" in log and "equal training FLOPs" in log


def test_scratch_with_the_flops_rule_trains_for_the_training_flops_spent(control_run):
    path, _ = control_run
    s = summary_of(path)
    scratch = s["scratch"]
    # train (2 epochs at the unpruned FLOPs) + finetune (1 epoch at the pruned FLOPs, the teacher's forward
    # passes counted once each, a training step as three forward passes), over the scratch model's FLOPs
    spent = 2 * 3 * s["train"]["flops"] + 1 * (3 * s["finetune"]["flops"] + s["train"]["flops"])
    assert scratch["epochs_rule"] == "flops" and scratch["chain_epochs"] == 3
    assert scratch["equal_flops_epochs"] == round(spent / (3 * scratch["flops"])) == scratch["epochs"]
    assert scratch["epochs"] > scratch["chain_epochs"]


def test_the_final_table_says_which_arm_won(control_run):
    path, out = control_run
    rows = summary_of(path)["comparison"]
    said = verdict(rows)
    assert said is not None and said in out and said.startswith("on test accuracy")
    arms = {k: rows[k]["test_accuracy"] for k in ("finetune", "scratch", "uniform")}
    top = max(arms.values())
    winners = [k for k, v in arms.items() if v == top]
    if len(winners) > 1:
        assert "tie" in said
    elif winners == ["finetune"]:
        assert "the slimmed model finetune won" in said
    else:
        assert f"the control {winners[0]} won" in said
    # no controls: no verdict
    assert verdict({k: v for k, v in rows.items() if not v.get("control")}) is None


def test_status_headline_is_the_deployed_model_not_a_control(control_run):
    from tui.screens.runs import row_cells
    from tui.widgets.checkpoint_panel import run_renderable
    from tui.widgets.ckpt_tree import run_label

    path, _ = control_run
    summary = summary_of(path)
    status = json.loads((path / "status.json").read_text())
    assert status["best_accuracy"] == summary["finetune"]["accuracy"] and status["model_stage"] == "finetune"
    info = runs.read_run(path)
    shown = f"{100 * summary['finetune']['accuracy']:.1f}%"
    assert run_label(info).plain.endswith(f"· acc {shown}")
    assert row_cells(info)["best"] == f"{100 * summary['finetune']['accuracy']:.2f}%"
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(run_renderable(info))
    assert f"{100 * summary['finetune']['accuracy']:.2f}% (finetune)" in console.export_text()


def test_a_control_stage_never_writes_the_headline(tmp_path, tiny_preset):
    """The control's epochs write no best_accuracy while it trains; its commit leaves the headline alone."""
    data = yaml.safe_load(tiny_preset(training__epochs=1).read_text())
    data["stages"] = [{"type": "train"}, {"type": "prune", "percent": 0.5},
                      {"type": "finetune", "training": {"epochs": 1, "lr": 1e-6}}, {"type": "uniform"}]
    spec = spec_from_dict(data)
    path = runs.create_run_dir(tmp_path / "runs", "head")
    prepare_run_dir(path, spec)
    statuses: list[dict] = []
    writer_status = runs.RunWriter.status

    def spy(self, **fields):
        statuses.append(fields)
        return writer_status(self, **fields)

    runs.RunWriter.status = spy
    try:
        Pipeline(spec, path).run()
    finally:
        runs.RunWriter.status = writer_status
    uniform_start = next(i for i, f in enumerate(statuses) if f.get("stage") == "uniform")
    assert not any("best_accuracy" in f for f in statuses[uniform_start:])
    summary = summary_of(path)
    assert json.loads((path / "status.json").read_text())["best_accuracy"] == summary["finetune"]["accuracy"]


def test_uniform_plan_is_one_width_at_the_flops_goal():
    from engine.models import registry  # noqa: F401  (registers the built-in archs)
    from engine.slim.plan import make_plan
    from engine.slim.scratch import uniform_plan

    arch = checkpoint.arch_dict("resnet_cifar", 10, 3, {"depth": 8, "width": 0.5})
    model = checkpoint.build_model(arch).eval()
    with torch.no_grad():  # uneven gammas: the slimming plan cuts some groups far more than others
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape))
    pruned = make_plan(model, percent=0.6, round_to=2, input_shape=(3, 32, 32)).to_dict()
    plan, width = uniform_plan(arch, pruned, (3, 32, 32))
    goal = pruned["totals"]["flops_after"] / pruned["totals"]["flops_before"]
    reached = plan["totals"]["flops_after"] / plan["totals"]["flops_before"]
    assert plan["options"]["uniform"]["goal_flops"] == pytest.approx(goal, abs=1e-6)
    assert abs(reached - goal) < 0.08 and plan["options"]["round_to"] == 2
    kept = [len(g["kept_idxs"]) / g["total"] for g in plan["groups"] if not g["ignored"] and g["total"] >= 8]
    assert max(kept) - min(kept) < 0.3  # one width (up to rounding to 2 channels)


def test_the_prune_headline_counts_the_prunable_channels():
    """A classifier's outputs (and the channels tied to them) are never cut: they stay out of the
    headline's figure, and the whole count follows in brackets."""
    from engine.slim.plan import make_plan
    from engine.slim.report import prune_lines, share

    arch = checkpoint.arch_dict("vgg", 100, 3, {"depth": 11, "width": 0.125})
    model = checkpoint.build_model(arch).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape))
    plan = make_plan(model, percent=0.5, input_shape=(3, 32, 32))
    t = plan.totals
    assert t["channels_before"] > t["prunable_before"]  # the 100 classifier outputs at least
    line = next(x for x in prune_lines("prune", plan) if "channels" in x)
    prunable = share(t["prunable_before"], t["prunable_after"])
    assert line.startswith(f"[prune] prunable channels {t['prunable_before']:,} -> {t['prunable_after']:,} "
                           f"({prunable} removed) [all channels {t['channels_before']:,} -> {t['channels_after']:,}]")
    assert prunable != share(t["channels_before"], t["channels_after"])
