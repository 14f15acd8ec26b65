"""CIFAR ResNet (He et al. 2016, depth 6n+2) with 1x1 conv+BN projection shortcuts.

Projection (option B) shortcuts instead of zero-padding keep every conv followed by a
BatchNorm and every residual add between tensors produced by standard modules, so the
channel dependency graph is plain.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import ModelError
from engine.models.sizing import check_multiplier, check_positive_int, input_size, scaled

STAGE_CHANNELS = (16, 32, 64)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def blocks_per_stage(depth: object) -> int:
    valid = (
        isinstance(depth, int)
        and not isinstance(depth, bool)
        and depth >= 8
        and (depth - 2) % 6 == 0
    )
    if not valid:
        raise ModelError(
            f"resnet_cifar: depth must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56, 110), got {depth!r}."
        )
    return (depth - 2) // 6  # type: ignore[operator]


class ResNetCifar(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, depth: int = 20, width: float = 1.0
    ):
        super().__init__()
        num_classes = check_positive_int("resnet_cifar", "num_classes", num_classes)
        in_channels = check_positive_int("resnet_cifar", "in_channels", in_channels)
        n = blocks_per_stage(depth)
        width = check_multiplier("resnet_cifar", "width", width)

        stem = scaled(STAGE_CHANNELS[0], width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        channels = stem
        stages = []
        for i, base in enumerate(STAGE_CHANNELS):
            out = scaled(base, width)
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, out, stride))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        self.default_ignore: list[str] = ["fc"]
        self.input_size = input_size(in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
