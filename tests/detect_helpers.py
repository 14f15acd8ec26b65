"""Shared pieces of the detection tests: a tiny detection preset and a channel mask for plan == cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

TINY_DETECT = {
    "name": "dtiny",
    "task": "detect",
    "model": {"arch": "ultralytics:yolov8n.yaml", "kwargs": {"width": 0.125}},
    "data": {"dataset": "yolo_shapes", "num_classes": 3, "train_size": 32, "val_size": 16, "image_size": 64},
    "training": {"epochs": 1, "batch_size": 16, "lr": 0.01, "log_every": 1, "device": "cpu", "warmup_epochs": 0},
    "stages": [{"type": "train"}],
}


def write_preset(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY_DETECT))
    data.update(changes)
    data.setdefault("output", {"runs_dir": str(tmp_path / "runs")})
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Spread gamma and the running statistics so that every channel matters and scores differ."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.05
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5


def mask_pruned(model: nn.Module, inputs, plan) -> None:
    """Zero gamma and beta of every channel `plan` cuts: SiLU(0) = 0, so the channel carries nothing."""
    modules = dict(model.named_modules())
    for group, pg in zip(inputs.groups, plan.groups, strict=True):
        cut = np.array(pg.pruned_idxs(), dtype=np.int64)
        if cut.size == 0:
            continue
        for m in group.members:
            if m.kind == "bn" and m.side == "out":
                hit = np.isin(m.root_idxs, cut)
                idx = torch.as_tensor(m.idxs[hit])
                modules[m.name].weight.data[idx] = 0
                modules[m.name].bias.data[idx] = 0
