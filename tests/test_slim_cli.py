"""`slimlab inspect` and `slimlab prune` on checkpoints the tests write."""

from __future__ import annotations

import json

import torch

from engine import checkpoint
from engine.cli import ExitCode, main
from engine.trust import Trust

ARCH = checkpoint.arch_dict("resnet_cifar", 4, 3, {"depth": 8, "width": 0.5})


def trained_like(tmp_path):
    torch.manual_seed(0)
    model = checkpoint.build_model(ARCH)
    for m in model.modules():  # a spread of |gamma| like after sparse training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand_like(m.weight) ** 3
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, ARCH)
    return path, model


def test_inspect_json_lists_layers_and_coupled_groups(tmp_path, capsys):
    path, model = trained_like(tmp_path)
    assert main(["inspect", str(path), "--json"]) == ExitCode.OK
    out = json.loads(capsys.readouterr().out)
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [r["layer"] for r in out["layers"]] == bns
    residual = [g for g in out["groups"] if len(g["layers"]) > 1]
    assert residual, "the residual adds couple several BN layers into one group"
    assert out["overall"]["channels"] == sum(r["channels"] for r in out["layers"])


def test_inspect_tables(tmp_path, capsys):
    path, _ = trained_like(tmp_path)
    assert main(["inspect", str(path)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "coupled channel groups" in out and "layer1.0.bn1" in out


def test_prune_writes_checkpoint_and_plan_that_reload(tmp_path, capsys):
    path, model = trained_like(tmp_path)
    out = tmp_path / "p" / "pruned.pt"
    assert main(["prune", str(path), "--percent", "0.5", "--round-to", "4", "--out", str(out)]) == ExitCode.OK
    text = capsys.readouterr().out
    assert "params" in text and "->" in text and "FLOPs" in text
    plan = json.loads((out.parent / "pruned.plan.json").read_text())
    pruned = checkpoint.load(out)
    assert pruned.plan == plan
    assert sum(p.numel() for p in pruned.model.parameters()) == plan["totals"]["params_after"]
    assert pruned.model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    # pruning the pruned file again composes into one plan on the original architecture
    again = tmp_path / "p" / "again.pt"
    assert main(["prune", str(out), "--percent", "0.3", "--out", str(again)]) == ExitCode.OK
    twice = checkpoint.load(again)
    assert twice.plan["totals"]["params_before"] == plan["totals"]["params_before"]
    assert sum(p.numel() for p in twice.model.parameters()) < plan["totals"]["params_after"]


def test_prune_bad_inputs(tmp_path, capsys):
    path, _ = trained_like(tmp_path)
    assert main(["prune", str(path), "--percent", "1.5"]) == ExitCode.USAGE
    assert "outside [0, 1)" in capsys.readouterr().err
    assert main(["prune", str(path), "--threshold", "10", "--min-keep", "0"]) == ExitCode.FAILED
    assert "min_keep" in capsys.readouterr().err
    bare = tmp_path / "bare.pt"
    torch.save(checkpoint.build_model(ARCH).state_dict(), bare)
    assert main(["inspect", str(bare)]) == ExitCode.FAILED
    assert "--arch" in capsys.readouterr().err
    assert main(["inspect", str(bare), "--arch", "resnet_cifar", "--num-classes", "4",
                 "--arch-kwargs", '{"depth": 8, "width": 0.5}', "--json"]) == ExitCode.OK


def test_model_without_batchnorm_says_slimming_needs_bn(tmp_path, capsys):
    arch = checkpoint.arch_dict("kd_student", 4)
    path = tmp_path / "nobn.pt"
    checkpoint.save(path, checkpoint.build_model(arch), arch)
    assert main(["inspect", str(path)]) == ExitCode.FAILED
    assert "BatchNorm" in capsys.readouterr().err


def test_shares_never_round_to_all_or_nothing():
    from engine.slim.report import share

    assert share(1000, 500) == "50.0%"
    assert share(100_000, 3) == ">99.9%" and share(100_000, 0) == "100.0%"
    assert share(100_000, 99_999) == "<0.1%" and share(10, 10) == "0.0%"


def test_inspect_piped_keeps_long_layer_names_whole(tmp_path, capsys):
    arch = checkpoint.arch_dict("zoo:SlimPreResNet", 10)
    model = checkpoint.build_model(arch, trust=Trust().allowing(arch["name"]))
    path = tmp_path / "long.pt"
    checkpoint.save(path, model, arch)
    assert main(["inspect", str(path), "--allow-arch", arch["name"]]) == ExitCode.OK
    out = capsys.readouterr().out
    longest = max((n for n, _ in model.named_modules()), key=len)
    assert len(longest) > 10 and all(n in out for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert max(len(line) for line in out.splitlines()) > 80  # rows are not folded to 80 columns
