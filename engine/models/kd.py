"""Teacher and student CNNs from the PyTorch knowledge-distillation tutorial (DeepNN, LightNN).

The tutorial nets have no BatchNorm; `bn=True` adds one after every conv so that network
slimming has gamma factors to work with. Their classifiers flatten an 8x8 map, so inputs
must be 32x32.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import ModelError
from engine.models.sizing import check_positive_int, input_size


def conv_block(in_channels: int, out_channels: int, bn: bool) -> list[nn.Module]:
    # With BatchNorm following, a conv bias is redundant (BN's beta absorbs it).
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    return layers


def check_bn(arch: str, bn: object) -> bool:
    if not isinstance(bn, bool):
        raise ModelError(f"{arch}: bn must be true or false, got {bn!r}.")
    return bn


class DeepNN(nn.Module):
    """Teacher: conv 3->128->64, pool, 64->64->32, pool; classifier 2048->512->classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, bn: bool = False):
        super().__init__()
        num_classes = check_positive_int("kd_teacher", "num_classes", num_classes)
        in_channels = check_positive_int("kd_teacher", "in_channels", in_channels)
        bn = check_bn("kd_teacher", bn)
        self.features = nn.Sequential(
            *conv_block(in_channels, 128, bn),
            *conv_block(128, 64, bn),
            nn.MaxPool2d(kernel_size=2, stride=2),
            *conv_block(64, 64, bn),
            *conv_block(64, 32, bn),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(32 * 8 * 8, 512),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(512, num_classes),
        )
        self.default_ignore: list[str] = ["classifier.3"]
        self.input_size = input_size(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class LightNN(nn.Module):
    """Student: conv 3->16, pool, 16->16, pool; classifier 1024->256->classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, bn: bool = False):
        super().__init__()
        num_classes = check_positive_int("kd_student", "num_classes", num_classes)
        in_channels = check_positive_int("kd_student", "in_channels", in_channels)
        bn = check_bn("kd_student", bn)
        self.features = nn.Sequential(
            *conv_block(in_channels, 16, bn),
            nn.MaxPool2d(kernel_size=2, stride=2),
            *conv_block(16, 16, bn),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 8 * 8, 256),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(256, num_classes),
        )
        self.default_ignore: list[str] = ["classifier.3"]
        self.input_size = input_size(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
