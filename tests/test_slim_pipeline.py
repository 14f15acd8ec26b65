"""Slimming stages end to end on a tiny run: sparse -> prune -> finetune (with teacher) -> sweep, and rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.cli import prepare_run_dir
from engine.config import load_preset
from engine.errors import PruneError
from engine.pipeline import Pipeline
from engine.runs import create_run_dir

STAGES = [
    {"type": "train"},
    {"type": "sparse", "s": 1e-3, "training": {"epochs": 1}},
    {"type": "prune", "percent": 0.5, "round_to": 2},
    {"type": "finetune", "teacher": "original", "kd": {"T": 2.0}, "training": {"epochs": 1, "lr": 0.01}},
    {"type": "sweep", "ratios": [0.0, 0.3, 0.6]},
]


def run(tmp_path: Path, preset: Path, name: str, overrides: list[str] = ()) -> Path:
    spec = load_preset(preset, overrides)
    path = create_run_dir(tmp_path / "runs", name)
    prepare_run_dir(path, spec)
    Pipeline(spec, path).run()
    return path


def test_sparse_prune_finetune_sweep(tmp_path, tiny_preset):
    path = run(tmp_path, tiny_preset(stages=STAGES), "slim")
    summary = json.loads((path / "summary.json").read_text())
    assert list(summary) == ["train", "sparse", "prune", "finetune", "sweep", "comparison"]
    assert set(summary["comparison"]) == {"train", "sparse", "prune", "finetune"}
    assert summary["prune"]["flops"] < summary["sparse"]["flops"]
    assert summary["prune"]["params"] < summary["sparse"]["params"]
    assert summary["finetune"]["flops"] == summary["prune"]["flops"]

    sparse_lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if '"gamma_lt_1e-2"' in x]
    assert sparse_lines and all(r["stage"] == "sparse" for r in sparse_lines)

    plan = json.loads((path / "plan.json").read_text())
    kept = [g["kept"] for g in plan["groups"] if g["kept"] < g["total"]]
    assert kept and all(k % 2 == 0 or k == g["total"] for k, g in zip(kept, plan["groups"], strict=False))

    # the pruned checkpoint reloads (weights_only) into the identical model
    ckpt = path / "weights" / "finetune.pt"
    raw = torch.load(ckpt, weights_only=True)
    assert raw["plan"]["groups"] == plan["groups"]
    a, b = checkpoint.load(ckpt).model, checkpoint.load(ckpt).model
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (a(x) - b(x)).abs().max().item() <= 1e-6

    sweep = json.loads((path / "sweep.json").read_text())["rows"]
    assert [r["ratio"] for r in sweep] == [0.0, 0.3, 0.6]
    assert sweep[0]["flops"] > sweep[-1]["flops"]
    log = (path / "log.txt").read_text()
    assert "stage finetune done" in log


def test_rounds_compose_into_one_plan_that_reloads(tmp_path, tiny_preset):
    stages = [{"type": "train", "training": {"epochs": 1}},
              {"type": "sparse", "training": {"epochs": 1}},
              {"type": "prune", "percent": [0.3, 0.4]},
              {"type": "finetune", "training": {"epochs": 1}}]
    path = run(tmp_path, tiny_preset(stages=stages, rounds=2), "rounds")
    status = json.loads((path / "status.json").read_text())
    assert status["completed"] == ["train", "sparse", "prune", "finetune", "sparse-r2", "prune-r2", "finetune-r2"]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["prune-r2"]["params"] < summary["prune"]["params"] < summary["train"]["params"]
    final = checkpoint.load(path / "weights" / "best.pt")
    assert final.plan["totals"]["params_before"] == summary["train"]["params"]
    assert final.plan["totals"]["params_after"] == summary["prune-r2"]["params"]
    assert final.model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_threshold_that_would_empty_a_layer_without_min_keep_is_an_error(tmp_path, tiny_preset):
    stages = [{"type": "train", "training": {"epochs": 1}}, {"type": "prune", "threshold": 100.0, "min_keep": 0}]
    with pytest.raises(PruneError) as e:
        run(tmp_path, tiny_preset(stages=stages), "empty")
    assert "min_keep" in str(e.value)


def test_threshold_above_every_gamma_is_clamped_with_a_warning(tmp_path, tiny_preset):
    stages = [{"type": "train", "training": {"epochs": 1}}, {"type": "prune", "threshold": 100.0, "min_keep": 2}]
    path = run(tmp_path, tiny_preset(stages=stages), "clamped")
    plan = json.loads((path / "plan.json").read_text())
    prunable = [g for g in plan["groups"] if not g["ignored"]]
    assert all(g["kept"] == 2 and g["clamped"] for g in prunable)
    assert "warning" in (path / "log.txt").read_text()


def test_resume_inside_finetune_after_prune_and_sweep(tmp_path, tiny_preset):
    from engine.errors import Cancelled

    from helpers import StopAfter

    stages = [{"type": "train", "training": {"epochs": 1}}, {"type": "prune", "percent": 0.4},
              {"type": "sweep", "ratios": [0.0, 0.5]}, {"type": "finetune", "training": {"epochs": 2}}]
    spec = load_preset(tiny_preset(stages=stages))
    path = create_run_dir(tmp_path / "runs", "resume")
    prepare_run_dir(path, spec)
    with pytest.raises(Cancelled):
        Pipeline(spec, path, stop=StopAfter(8 + 3)).run()  # 8 train steps, then 3 finetune steps
    Pipeline(spec, path).run(resume=True)
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "done" and status["completed"] == ["train", "prune", "sweep", "finetune"]
    final = checkpoint.load(path / "weights" / "best.pt")
    assert final.plan is not None and final.plan == json.loads((path / "plan.json").read_text())
