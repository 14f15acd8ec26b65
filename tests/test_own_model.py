"""Bringing your own model, exactly as the README's "Your own model" section shows it."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from engine.cli import ExitCode, main

RESNET = '''
    import torch.nn as nn
    import torch.nn.functional as F


    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))


    class ResNet(nn.Module):
        def __init__(self, block, num_blocks, num_classes=10, width=64):
            super().__init__()
            self.in_planes = width
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.layers = nn.Sequential(*[self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2)
                                          for i, n in enumerate(num_blocks)])
            self.linear = nn.Linear(self.in_planes, num_classes)

        def _make_layer(self, block, planes, n, stride):
            layers = []
            for s in [stride] + [1] * (n - 1):
                layers.append(block(self.in_planes, planes, s))
                self.in_planes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            out = self.layers(F.relu(self.bn1(self.conv1(x))))
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
'''
ARCH = "models.resnet:ResNet"
KWARGS = json.dumps({"block": "models.resnet:BasicBlock", "num_blocks": [1, 1], "width": 8})


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project folder: models/resnet.py and a state_dict their training script saved."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "resnet.py").write_text(textwrap.dedent(RESNET))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("models", "models.resnet"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    sys.path.insert(0, str(tmp_path))
    from models.resnet import BasicBlock, ResNet

    sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    net = ResNet(BasicBlock, [1, 1], num_classes=7, width=8)
    rng = np.random.default_rng(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.from_numpy(rng.lognormal(-2, 1, m.num_features).astype(np.float32))
    torch.save(net.state_dict(), tmp_path / "ckpt.pth")
    return tmp_path, net


def test_inspect_and_prune_a_state_dict_of_your_own_class(project, capsys):
    folder, net = project
    assert main(["inspect", "ckpt.pth", "--arch", ARCH, "--arch-kwargs", KWARGS]) == ExitCode.OK
    assert "layers.1.0.bn2" in capsys.readouterr().out
    assert main(["prune", "ckpt.pth", "--arch", ARCH, "--arch-kwargs", KWARGS, "--percent", "0.5",
                 "--input-size", "3x32x32", "--out", "ckpt-pruned.pt"]) == ExitCode.OK
    raw = torch.load(folder / "ckpt-pruned.pt", weights_only=True)
    assert raw["arch"]["num_classes"] == 7  # read from the state_dict: linear.weight is (7, 16)
    assert raw["arch"]["input_size"] == [3, 32, 32]
    # reloading builds the classes the file names: both must be named again
    capsys.readouterr()
    assert main(["inspect", "ckpt-pruned.pt"]) != ExitCode.OK
    assert f"--allow-arch {ARCH}" in capsys.readouterr().err
    assert main(["inspect", "ckpt-pruned.pt", "--allow-arch", ARCH]) != ExitCode.OK
    assert "--allow-arch models.resnet:BasicBlock" in capsys.readouterr().err
    assert main(["inspect", "ckpt-pruned.pt", "--allow-arch", ARCH, "--allow-arch", "models.resnet:BasicBlock"]) == ExitCode.OK


def test_a_pickled_whole_model_needs_trust_and_an_input_size(project, capsys):
    folder, net = project
    torch.save(net, folder / "whole.pt")  # no input_size attribute, so tracing needs one
    assert main(["inspect", "whole.pt", "--trust"]) != ExitCode.OK
    assert "--input-size" in capsys.readouterr().err
    assert main(["inspect", "whole.pt", "--trust", "--input-size", "3x40x40"]) == ExitCode.OK


def test_bad_input_size_and_kwargs_are_usage_errors(project, capsys):
    assert main(["inspect", "ckpt.pth", "--arch", ARCH, "--arch-kwargs", KWARGS, "--input-size", "3x32"]) == ExitCode.USAGE
    assert "CxHxW" in capsys.readouterr().err
    assert main(["inspect", "ckpt.pth", "--arch", ARCH, "--arch-kwargs", "[1, 2]"]) == ExitCode.USAGE
    assert "JSON object" in capsys.readouterr().err


def test_a_preset_runs_your_own_class_with_its_block_and_input_size(project, capsys):
    folder, _ = project
    preset = {
        "name": "own",
        "model": {"arch": ARCH, "kwargs": json.loads(KWARGS), "input_size": "3x32x32"},
        "data": {"dataset": "shapes", "num_classes": 3, "train_size": 64, "val_size": 32, "image_size": 32},
        "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "log_every": 1},
        "stages": [{"type": "train"}, {"type": "prune", "percent": 0.5}],
        "output": {"runs_dir": str(folder / "runs")},
    }
    path = folder / "own.yaml"
    path.write_text(yaml.safe_dump(preset))
    assert main(["--batch", str(path)]) == ExitCode.OK
    raw = torch.load(folder / "runs" / "own" / "weights" / "best.pt", weights_only=True)
    assert raw["arch"]["kwargs"]["block"] == "models.resnet:BasicBlock" and raw["arch"]["input_size"] == [3, 32, 32]
    assert raw["plan"]["input_shape"] == [3, 32, 32] and any(g["kept"] < g["total"] for g in raw["plan"]["groups"])
    bad = {**preset, "model": {**preset["model"], "input_size": "32x32"}}
    path.write_text(yaml.safe_dump(bad))
    assert main(["--batch", str(path)]) == ExitCode.USAGE
    assert "model.input_size" in capsys.readouterr().err
