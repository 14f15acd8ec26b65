"""A small YOLOv5-style classification network: the YOLOv5 backbone (Conv, C3, SPPF) and its
Classify head. Module names follow YOLOv5 (`model.0.conv`, `model.2.cv1.bn`, `model.2.m.0.cv2`)
so slimming recipes written for YOLOv5 read the same here.

One change for 32x32 inputs: the stem is a 3x3 stride-1 conv instead of YOLOv5's 6x6 stride-2,
so CIFAR images end at 2x2 rather than 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.sizing import check_multiplier, check_positive_int, input_size, make_divisible

# (out channels, repeats, kernel, stride) for the YOLOv5 v6 backbone rows 0-8; row 9 is SPPF.
BACKBONE = (
    ("Conv", 64, 1, 3, 1),
    ("Conv", 128, 1, 3, 2),
    ("C3", 128, 3, 1, 1),
    ("Conv", 256, 1, 3, 2),
    ("C3", 256, 6, 1, 1),
    ("Conv", 512, 1, 3, 2),
    ("C3", 512, 9, 1, 1),
    ("Conv", 1024, 1, 3, 2),
    ("C3", 1024, 3, 1, 1),
)
HEAD_CHANNELS = 1280  # YOLOv5 Classify's hidden width


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU, the YOLOv5 building block."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convs: two 1x1 branches, n bottlenecks on one, concat, 1x1 fuse."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Classify(nn.Module):
    """YOLOv5 classification head: 1x1 Conv, global average pool, dropout, Linear."""

    def __init__(self, c1: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.conv = Conv(c1, HEAD_CHANNELS, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(self.conv(x)), 1)))


class C3Net(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 0.25,
        depth: float = 0.33,
        dropout: float = 0.0,
    ):
        super().__init__()
        num_classes = check_positive_int("c3net", "num_classes", num_classes)
        in_channels = check_positive_int("c3net", "in_channels", in_channels)
        width = check_multiplier("c3net", "width", width)
        depth = check_multiplier("c3net", "depth", depth)

        layers: list[nn.Module] = []
        channels = in_channels
        for kind, base, repeats, k, s in BACKBONE:
            out = make_divisible(base * width)
            if kind == "Conv":
                layers.append(Conv(channels, out, k, s))
            else:
                layers.append(C3(channels, out, n=max(round(repeats * depth), 1)))
            channels = out
        layers.append(SPPF(channels, channels, 5))
        self.model = nn.Sequential(*layers)
        self.head = Classify(channels, num_classes, dropout)

        self.default_ignore: list[str] = ["head.fc"]
        self.input_size = input_size(in_channels)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                # YOLOv5's BatchNorm settings
                m.eps = 1e-3
                m.momentum = 0.03

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(x))
