"""CIFAR VGG with BatchNorm, the network used by the network-slimming paper (Liu et al. 2017)."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.models.sizing import (
    check_choice,
    check_multiplier,
    check_positive_int,
    input_size,
    scaled,
)

# "M" is a 2x2 max-pool; the last stage has no pool so 32x32 inputs end at 2x2.
CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ],
}


class VGG(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, depth: int = 11, width: float = 1.0
    ):
        super().__init__()
        num_classes = check_positive_int("vgg", "num_classes", num_classes)
        in_channels = check_positive_int("vgg", "in_channels", in_channels)
        depth = check_choice("vgg", "depth", depth, tuple(CONFIGS))
        width = check_multiplier("vgg", "width", width)

        layers: list[nn.Module] = []
        channels = in_channels
        for item in CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = scaled(int(item), width)
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

        self.default_ignore: list[str] = ["classifier"]
        self.input_size = input_size(in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # Same init as the network-slimming reference code: gamma starts at 0.5 so the
        # L1 penalty has room to push unimportant channels towards zero.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
