"""The slimming recipe end to end on tiny runs: pruned-at-target accuracy, s: auto, FLOPs and
max_drop targets, the scratch control, epoch selection and early stopping, headless output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import checkpoint, data
from engine.config import load_preset
from engine.errors import PresetError
from engine.slim.monitor import PrunedAtTarget

from helpers import run_preset

RECIPE = [
    {"type": "train", "target": {"percent": 0.3}},
    {"type": "sparse", "s": 1e-3, "training": {"epochs": 2}},
    {"type": "sweep", "ratios": [0.0, 0.3, 0.6]},
    {"type": "prune", "target_flops": 0.5, "round_to": 2, "ignore": ["no_such_layer"]},
    {"type": "finetune", "training": {"epochs": 1}},
    {"type": "scratch"},
]


def run(tmp_path: Path, preset: Path, name: str) -> tuple[Path, str]:
    return run_preset(preset, tmp_path / "runs", name)


def metrics(path: Path, stage: str) -> list[dict]:
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage and "accuracy" in r]


def test_recipe_logs_pruned_at_target_and_ends_with_scratch_control(tmp_path, tiny_preset):
    path, out = run(tmp_path, tiny_preset(stages=RECIPE, training__epochs=1), "recipe")
    sparse = metrics(path, "sparse")
    assert len(sparse) == 2
    # a train stage given a target logs the same figure (no s: it has no penalty)
    train = metrics(path, "train")
    assert len(train) == 1 and 0.0 <= train[0]["acc_pruned_at_target"] <= 1.0 and "s" not in train[0]
    for r in sparse:
        assert 0.0 <= r["acc_pruned_at_target"] <= 1.0 and r["s"] == 1e-3
        assert "gamma_rel_lt_1e-2" in r and r["target_threshold"] > 0
    summary = json.loads((path / "summary.json").read_text())

    # the logged figure is what the saved sparse output scores when pruned at the target
    spec = load_preset(path / "spec.yaml")
    bundle = data.build(spec.data, batch_size=spec.training.batch_size, seed=spec.training.seed)
    chosen = summary["sparse"]["selected_epoch"] - 1
    bundle.train.set_epoch(chosen)
    model = checkpoint.load(path / "weights" / "sparse.pt").model
    monitor = PrunedAtTarget({"target_flops": 0.5, "round_to": 2}, (3, 32, 32))
    monitor.on_fit_start(type("T", (), {"model": model})())
    again = monitor.measure(model, bundle.val, torch.device("cpu"), calibrate=bundle.train)
    assert again["acc_pruned_at_target"] == pytest.approx(sparse[chosen]["acc_pruned_at_target"])
    assert summary["sparse"]["acc_pruned_at_target"] == sparse[chosen]["acc_pruned_at_target"]
    # with a target the sparse output is its best epoch by pruned-at-target accuracy, ties to the later one
    best = max(r["acc_pruned_at_target"] for r in sparse)
    assert chosen == max(i for i, r in enumerate(sparse) if r["acc_pruned_at_target"] == best)

    # the FLOPs target resolved through the plan's estimate
    target = summary["prune"]["target"]
    assert target["target_flops"] == 0.5 and target["reached"] <= 0.5
    plan = json.loads((path / "plan.json").read_text())
    assert plan["totals"]["flops_after"] / plan["totals"]["flops_before"] == pytest.approx(target["reached"], abs=1e-6)

    # scratch: the pruned architecture from random init, for train + sparse + finetune epochs
    assert summary["scratch"]["epochs"] == 1 + 2 + 1 and summary["scratch"]["control"] == "scratch"
    assert summary["scratch"]["params"] == summary["finetune"]["params"]
    assert set(summary["comparison"]) == {"train", "sparse", "prune", "finetune", "scratch"}
    scratch = checkpoint.load(path / "weights" / "scratch.pt")
    assert scratch.plan == plan
    finetuned = checkpoint.load(path / "weights" / "finetune.pt").model.state_dict()
    assert any(not torch.equal(v, finetuned[k]) for k, v in scratch.model.state_dict().items() if v.is_floating_point())
    # a control does not become the run's model
    assert (path / "weights" / "best.pt").read_bytes() == (path / "weights" / "finetune.pt").read_bytes()

    # headless output: pruned-at-target per sparse epoch, the sweep curve, the prune summary, the final table
    assert sum("[sparse] epoch" in line and "pruned-at-target" in line for line in out.splitlines()) == 2
    assert "[sweep] ratio  accuracy" in out and "[sweep]  0.60" in out
    assert "[prune] target_flops 0.5 -> |gamma| threshold" in out and "[prune] group" in out
    assert "[prune] warning: ignore ['no_such_layer'] matched no prunable group" in out
    assert sum("[train] epoch" in line and "pruned-at-target" in line for line in out.splitlines()) == 1
    table = out[out.index("stage "):]
    assert "Δ vs baseline" in table and "% removed (params/FLOPs)" in table
    scratch_row = next(line for line in table.splitlines() if line.startswith("scratch"))
    assert "0.0% / 0.0%" not in scratch_row and "%" in scratch_row


def test_s_auto_logs_s_per_epoch_and_max_drop_prunes(tmp_path, tiny_preset):
    stages = [{"type": "train", "training": {"epochs": 1}},
              {"type": "sparse", "s": "auto", "target": {"percent": 0.4}, "training": {"epochs": 2}},
              {"type": "prune", "max_drop": 5.0}]
    path, out = run(tmp_path, tiny_preset(stages=stages), "auto")
    sparse = metrics(path, "sparse")
    assert len(sparse) == 2 and all(r["s"] > 0 for r in sparse)
    log = (path / "log.txt").read_text()
    assert "s: auto starts at s=" in log and "s: auto after epoch 1:" in log
    summary = json.loads((path / "summary.json").read_text())
    assert summary["sparse"]["s_setting"] == "auto"
    target = summary["prune"]["target"]
    rows = json.loads((path / "prune.sweep.json").read_text())["rows"]
    base = rows[0]["accuracy"]
    assert target["max_drop"] == 5.0 and (base - next(r for r in rows if r["ratio"] == target["ratio"])["accuracy"]) * 100 <= 5.0
    assert "[prune] max_drop 5: largest ratio within the drop is" in out


def test_select_last_and_early_stop(tmp_path, tiny_preset):
    stages = [{"type": "train", "training": {"epochs": 5, "lr": 1e-6}, "early_stop": {"patience": 1}},
              {"type": "sparse", "s": 1e-4, "select": "last", "training": {"epochs": 2}}]
    path, out = run(tmp_path, tiny_preset(stages=stages, data__test_fraction=0.25), "select")
    train = metrics(path, "train")
    accs = [r["accuracy"] for r in train]
    # stopped once accuracy had not risen for one epoch (lr 1e-6 hardly moves it)
    first_flat = next(i for i in range(1, 5) if accs[i] <= max(accs[:i]))
    assert len(train) == first_flat + 1 < 5
    assert "early stop after" in out and "early stop after" in (path / "log.txt").read_text()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["train"]["epochs"] == len(train)
    assert summary["train"]["selected_epoch"] == 1 + accs.index(max(accs))
    # the held-out test split is reported beside the val accuracy that selected the epoch
    spec = load_preset(path / "spec.yaml")
    bundle = data.build(spec.data, batch_size=spec.training.batch_size, seed=spec.training.seed)
    model = checkpoint.load(path / "weights" / "train.pt").model
    from engine.train import evaluate

    assert summary["train"]["test_accuracy"] == evaluate(model, bundle.test, torch.device("cpu"))["accuracy"]
    assert summary["comparison"]["sparse"]["test_accuracy"] is not None
    header = next(line for line in out.splitlines() if line.startswith("stage "))
    assert "test accuracy" in header and "Δ test" in header
    # select: last outputs the last epoch even without a target
    meta = torch.load(path / "weights" / "sparse.pt", weights_only=True)["meta"]
    assert meta["epoch"] == 1 and summary["sparse"]["selected_epoch"] == 2


@pytest.mark.parametrize("sparse,message", [
    ({"type": "sparse", "s": "auto"}, "s: auto steers s"),
    ({"type": "sparse", "select": "best"}, "select: best ranks sparse epochs"),
])
def test_sparse_without_target_is_refused(tmp_path, tiny_preset, sparse, message):
    with pytest.raises(PresetError) as e:
        load_preset(tiny_preset(stages=[sparse]))
    assert message in str(e.value) and "target" in str(e.value)
    # the next prune stage's rule is a target; one that needs a sweep is not
    load_preset(tiny_preset(stages=[sparse, {"type": "prune", "target_params": 0.5}]))
    with pytest.raises(PresetError, match="max_drop"):
        load_preset(tiny_preset(stages=[sparse, {"type": "prune", "max_drop": 1.0}]))


def test_scratch_needs_a_pruned_model(tmp_path, tiny_preset):
    from engine.errors import SlimlabError

    preset = tiny_preset(stages=[{"type": "train", "training": {"epochs": 1}}, {"type": "scratch"}])
    with pytest.raises(SlimlabError, match="not pruned"):
        run(tmp_path, preset, "noscratch")
