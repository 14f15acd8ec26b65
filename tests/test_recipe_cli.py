"""`slimlab prune` with FLOPs / params targets and max_drop; `slimlab inspect` relative to initial gamma."""

from __future__ import annotations

import json

import torch

from engine import checkpoint
from engine.cli import ExitCode, main

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})


def trained_like(tmp_path):
    torch.manual_seed(0)
    model = checkpoint.build_model(ARCH)
    for m in model.modules():  # a spread of |gamma| like after sparse training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand_like(m.weight) ** 3
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, ARCH)
    return path


def test_prune_to_a_flops_target_and_an_unreachable_one(tmp_path, capsys):
    path = trained_like(tmp_path)
    out = tmp_path / "p.pt"
    assert main(["prune", str(path), "--target-flops", "0.4", "--round-to", "2", "--out", str(out)]) == ExitCode.OK
    text = capsys.readouterr().out
    assert "target_flops 0.4 -> |gamma| threshold" in text and "group" in text
    plan = json.loads((tmp_path / "p.plan.json").read_text()) if (tmp_path / "p.plan.json").exists() else \
        json.loads((tmp_path / "plan.json").read_text())
    t = plan["totals"]
    assert t["flops_after"] <= 0.4 * t["flops_before"] and plan["options"]["target"]["target_flops"] == 0.4

    assert main(["prune", str(path), "--target-params", "0.01", "--min-keep", "0.5"]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "target_params 0.01 cannot be reached" in err and "Use target_params >=" in err
    assert main(["prune", str(path), "--target-flops", "1.5"]) == ExitCode.USAGE
    assert main(["prune", str(path), "--max-drop", "1.0"]) == ExitCode.USAGE
    assert "--data" in capsys.readouterr().err


def test_inspect_reports_gamma_relative_to_initial(tmp_path, capsys):
    fresh = checkpoint.build_model(ARCH)  # VGG starts every gamma at 0.5
    with torch.no_grad():
        for i, m in enumerate(m for m in fresh.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            m.weight.fill_(0.004 if i % 2 else 0.5)  # 0.004 is below 1e-2 but 0.8% of 0.5
    path = tmp_path / "v.pt"
    checkpoint.save(path, fresh, ARCH)
    assert main(["inspect", str(path), "--json"]) == ExitCode.OK
    out = json.loads(capsys.readouterr().out)
    assert out["overall"]["initial_gamma"] == 0.5
    layers = out["layers"]
    assert all(r["initial_gamma"] == 0.5 for r in layers)
    assert [r["rel_lt_1e-2"] for r in layers] == [1.0 if i % 2 else 0.0 for i in range(len(layers))]


def test_prune_to_max_drop_on_shapes_data(tmp_path, capsys):
    path = trained_like(tmp_path)
    out = tmp_path / "d.pt"
    # an untrained model scores near chance at every ratio, so a drop of 100 points allows the last ratio tried
    assert main(["prune", str(path), "--max-drop", "100", "--data", "shapes", "--out", str(out)]) == ExitCode.OK
    text = capsys.readouterr().out
    assert "max_drop 100: largest ratio within the drop is 0.95" in text and "group" in text
    pruned = checkpoint.load(out)
    assert pruned.plan["options"]["target"]["max_drop"] == 100.0
    assert pruned.plan["totals"]["channels_after"] < pruned.plan["totals"]["channels_before"]
