"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs: stride-1 stem and first stride-2 stage
at stride 1, so CIFAR images end at 4x4 instead of 1x1."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.sizing import check_multiplier, check_positive_int, input_size, make_divisible

# (expansion, out channels, blocks, first stride)
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu(in_channels, hidden, 1))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        num_classes = check_positive_int("mobilenetv2", "num_classes", num_classes)
        in_channels = check_positive_int("mobilenetv2", "in_channels", in_channels)
        width = check_multiplier("mobilenetv2", "width", width)

        channels = make_divisible(STEM_CHANNELS * width)
        layers: list[nn.Module] = [conv_bn_relu(in_channels, channels, 3, 1)]
        for expansion, base, blocks, first_stride in SETTINGS:
            out = make_divisible(base * width)
            for i in range(blocks):
                layers.append(
                    InvertedResidual(channels, out, first_stride if i == 0 else 1, expansion)
                )
                channels = out
        # As in the reference model, the last conv never narrows below 1280.
        last = make_divisible(LAST_CHANNELS * max(1.0, width))
        layers.append(conv_bn_relu(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

        self.default_ignore: list[str] = ["classifier"]
        self.input_size = input_size(in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
