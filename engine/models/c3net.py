"""A small YOLOv5-style classification network: the YOLOv5 backbone (Conv, C3, SPPF) and its
Classify head. Module names follow YOLOv5 (`model.0.conv`, `model.2.cv1.bn`, `model.2.m.0.cv2`)
so slimming recipes written for YOLOv5 read the same here.

Differences from YOLOv5, all because these models train from scratch for a few epochs on
32x32 images (YOLOv5 trains for hundreds of epochs at 224px with warmup):

- The stem is a 3x3 stride-1 conv instead of 6x6 stride-2, and row 1 keeps stride 1, so 32x32
  inputs end at 4x4. With YOLOv5's strides the last C3 and SPPF run at 2x2 or 1x1, where a 3x3
  conv mostly sees padding.
- Conv weights use Kaiming (fan-out) init, the last BN gamma of every Bottleneck starts at zero
  and BatchNorm keeps PyTorch's eps/momentum. With PyTorch's default init and SiLU, the batch's
  features collapse onto a few directions by the deep stages at init (effective rank of 128
  images ~6 after the head conv), and SGD then stays at chance; zero gammas make each residual
  Bottleneck start as the identity. YOLOv5's momentum 0.03 leaves the eval running stats stale
  after a few hundred steps.
- The Classify hidden width scales with `width` (1280 at width 1) and its Linear starts at zero:
  a fixed 1280-wide SiLU feature makes the Linear's effective step lr * |f|^2 about ten times
  that of a CIFAR ResNet's, so early steps throw the logits far past chance.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.sizing import check_multiplier, check_positive_int, input_size, make_divisible

# (out channels, repeats, kernel, stride) for the YOLOv5 v6 backbone rows 0-8; row 9 is SPPF.
# Rows 0 and 1 have stride 1 here (see the module docstring).
BACKBONE = (
    ("Conv", 64, 1, 3, 1),
    ("Conv", 128, 1, 3, 1),
    ("C3", 128, 3, 1, 1),
    ("Conv", 256, 1, 3, 2),
    ("C3", 256, 6, 1, 1),
    ("Conv", 512, 1, 3, 2),
    ("C3", 512, 9, 1, 1),
    ("Conv", 1024, 1, 3, 2),
    ("C3", 1024, 3, 1, 1),
)
HEAD_CHANNELS = 1280  # YOLOv5 Classify's hidden width, scaled by `width` here


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

    def __init__(self, c1: int, num_classes: int, dropout: float = 0.0, hidden: int = HEAD_CHANNELS):
        super().__init__()
        self.conv = Conv(c1, hidden, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout)
        self.fc = nn.Linear(hidden, num_classes)

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
        self.head = Classify(channels, num_classes, dropout, make_divisible(HEAD_CHANNELS * width))

        self.default_ignore: list[str] = ["head.fc"]
        self.input_size = input_size(in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # Why each of these differs from YOLOv5 is in the module docstring.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.cv2.bn.weight)
        nn.init.zeros_(self.head.fc.weight)
        nn.init.zeros_(self.head.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(x))
