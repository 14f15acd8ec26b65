"""A zoo of small CNNs written the way public model code writes these patterns (tests/test_slim_zoo.py).

Each class builds with `num_classes` (so the registry can rebuild it as `zoo:Name`), is small enough
to trace and prune in about a second, and carries no slimlab attributes: what slimlab needs it
finds out itself.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def bn_conv(c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(c2))


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)


# ---------------------------------------------------------------------------- grouped conv + shuffle


class ShuffleUnit(nn.Module):
    """ShuffleNet v1: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1; add, or concat when striding."""

    def __init__(self, c1: int, c2: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = c2 // 4
        out = c2 - c1 if stride == 2 else c2
        g = 1 if c1 == 24 else groups
        self.groups = g
        self.conv1 = bn_conv(c1, mid, 1, g=g)
        self.conv2 = bn_conv(mid, mid, 3, stride, g=mid)
        self.conv3 = bn_conv(mid, out, 1, g=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = shuffle(out, self.groups)
        out = self.conv3(self.conv2(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class ShuffleNetG2(nn.Module):
    def __init__(self, num_classes: int = 10, groups: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 24), nn.ReLU())
        planes = (48, 96)
        layers, c = [], 24
        for p in planes:
            layers += [ShuffleUnit(c, p, 2, groups), ShuffleUnit(p, p, 1, groups)]
            c = p
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


class SplitBlock(nn.Module):
    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = int(x.size(1) * self.ratio)
        return x[:, :c, :, :], x[:, c:, :, :]


class ShuffleV2Block(nn.Module):
    """ShuffleNet v2 basic unit: split by ratio, one branch convolved, concat, shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.split = SplitBlock(0.5)
        self.branch = nn.Sequential(
            bn_conv(half, half), nn.ReLU(), bn_conv(half, half, 3, g=half), bn_conv(half, half), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.split(x)
        return shuffle(torch.cat([x1, self.branch(x2)], 1), 2)


class ShuffleV2Down(nn.Module):
    """ShuffleNet v2 down-sampling unit: both branches convolved (chunk-free), concat, shuffle."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        mid = c2 // 2
        self.left = nn.Sequential(bn_conv(c1, c1, 3, 2, g=c1), bn_conv(c1, mid), nn.ReLU())
        self.right = nn.Sequential(bn_conv(c1, mid), nn.ReLU(), bn_conv(mid, mid, 3, 2, g=mid), bn_conv(mid, mid), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 16, 3), nn.ReLU())
        self.stage = nn.Sequential(ShuffleV2Down(16, 32), ShuffleV2Block(32), ShuffleV2Block(32),
                                   ShuffleV2Down(32, 64), ShuffleV2Block(64))
        self.head = nn.Sequential(bn_conv(64, 128), nn.ReLU())
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.stage(self.stem(x)))
        return self.fc(F.avg_pool2d(out, out.shape[-1]).view(out.size(0), -1))


class ResNeXtBlock(nn.Module):
    """ResNeXt bottleneck: 1x1, grouped 3x3 (cardinality), 1x1, projection shortcut."""

    def __init__(self, c1: int, cardinality: int, width: int, stride: int) -> None:
        super().__init__()
        d = cardinality * width
        self.conv1 = bn_conv(c1, d)
        self.conv2 = bn_conv(d, d, 3, stride, g=cardinality)
        self.conv3 = bn_conv(d, 2 * d)
        self.shortcut = bn_conv(c1, 2 * d, 1, stride) if stride != 1 or c1 != 2 * d else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return F.relu(self.conv3(out) + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(self, num_classes: int = 10, cardinality: int = 4, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 32, 3), nn.ReLU())
        d = cardinality * width
        self.layer1 = nn.Sequential(ResNeXtBlock(32, cardinality, width, 1), ResNeXtBlock(2 * d, cardinality, width, 1))
        self.layer2 = nn.Sequential(ResNeXtBlock(2 * d, cardinality, 2 * width, 2))
        self.fc = nn.Linear(4 * d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.layer2(self.layer1(self.stem(x))), 1).flatten(1))


# ---------------------------------------------------------------------------- squeeze-excitation


class MBConvSE(nn.Module):
    """EfficientNet MBConv: expand, depthwise, squeeze-excite on the expanded channels, project."""

    def __init__(self, c1: int, c2: int, expand: int, stride: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        mid = c1 * expand
        self.expand = bn_conv(c1, mid)
        self.dw = bn_conv(mid, mid, 3, stride, g=mid)
        squeeze = max(1, int(c1 * se_ratio))
        self.se1 = nn.Conv2d(mid, squeeze, 1)
        self.se2 = nn.Conv2d(squeeze, mid, 1)
        self.project = bn_conv(mid, c2)
        self.residual = stride == 1 and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.expand(x))
        out = F.silu(self.dw(out))
        w = F.adaptive_avg_pool2d(out, 1)
        w = torch.sigmoid(self.se2(F.silu(self.se1(w))))
        out = self.project(out * w)
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 16, 3), nn.SiLU())
        self.blocks = nn.Sequential(MBConvSE(16, 16, 1, 1), MBConvSE(16, 24, 4, 2), MBConvSE(24, 24, 4, 1),
                                    MBConvSE(24, 40, 4, 2))
        self.head = nn.Sequential(bn_conv(40, 96), nn.SiLU())
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1).flatten(1))


class SEBlock(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.fc2(w))


class RegNetYBlock(nn.Module):
    """RegNetY: 1x1, grouped 3x3 (group width), SE, 1x1, residual."""

    def __init__(self, c1: int, c2: int, group_width: int, stride: int) -> None:
        super().__init__()
        self.a = bn_conv(c1, c2)
        self.b = bn_conv(c2, c2, 3, stride, g=c2 // group_width)
        self.se = SEBlock(c2)
        self.c = bn_conv(c2, c2)
        self.shortcut = bn_conv(c1, c2, 1, stride) if stride != 1 or c1 != c2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c(self.se(F.relu(self.b(F.relu(self.a(x))))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class RegNetY(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 16, 3), nn.ReLU())
        self.body = nn.Sequential(RegNetYBlock(16, 32, 8, 2), RegNetYBlock(32, 32, 8, 1), RegNetYBlock(32, 64, 8, 2))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1))


# ---------------------------------------------------------------------------- pre-activation, dense, DPN


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN -> ReLU -> conv on the residual stream."""

    def __init__(self, c1: int, c2: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c1, c2, 1, stride, bias=False) if stride != 1 or c1 != c2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.layers = nn.Sequential(PreActBlock(16, 16, 1), PreActBlock(16, 16, 1), PreActBlock(16, 32, 2),
                                    PreActBlock(32, 32, 1))
        self.bn = nn.BatchNorm2d(32)
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).view(out.size(0), -1))


class DenseBottleneck(nn.Module):
    def __init__(self, c: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c1)
        self.conv = nn.Conv2d(c1, c2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        blocks = []
        for i in range(2):
            for _ in range(3):
                blocks.append(DenseBottleneck(c, growth))
                c += growth
            if i == 0:
                blocks.append(Transition(c, c // 2))
                c //= 2
        self.dense = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.dense(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class DPNBlock(nn.Module):
    """Dual path block: a residual part (the first `d` channels, added) and a dense part (concatenated)."""

    def __init__(self, c1: int, mid: int, d: int, dense: int, stride: int, first: bool) -> None:
        super().__init__()
        self.out_planes = d
        self.conv1 = bn_conv(c1, mid)
        self.conv2 = bn_conv(mid, mid, 3, stride, g=4)
        self.conv3 = bn_conv(mid, d + dense)
        self.shortcut = bn_conv(c1, d + dense, 1, stride) if first else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        x = self.shortcut(x) if self.shortcut is not None else x
        d = self.out_planes
        out = torch.cat([x[:, :d, :, :] + out[:, :d, :, :], x[:, d:, :, :], out[:, d:, :, :]], 1)
        return F.relu(out)


class DPN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 16, 3), nn.ReLU())
        blocks, c = [], 16
        for mid, d, dense, n, stride in ((16, 32, 8, 3, 1), (32, 48, 8, 2, 2)):
            for j in range(n):
                blocks.append(DPNBlock(c, mid, d, dense, stride if j == 0 else 1, j == 0))
                c = d + (j + 2) * dense
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


# ---------------------------------------------------------------------------- network slimming's own models


class channel_selection(nn.Module):  # noqa: N801 - the name the network-slimming code uses
    """Selects the channels whose `indexes` entry is non-zero (network slimming, Liu et al. 2017)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.indexes = nn.Parameter(torch.ones(num_channels))

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        selected_index = np.squeeze(np.argwhere(self.indexes.data.cpu().numpy()))
        if selected_index.size == 1:
            selected_index = np.resize(selected_index, (1,))
        return input_tensor[:, selected_index, :, :]


class SlimBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, cfg: list[int], stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = channel_selection(inplanes)
        self.conv1 = nn.Conv2d(cfg[0], cfg[1], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cfg[1])
        self.conv2 = nn.Conv2d(cfg[1], cfg[2], 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cfg[2])
        self.conv3 = nn.Conv2d(cfg[2], planes * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.select(self.bn1(x)))
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.downsample is not None:
            residual = self.downsample(x)
        return out + residual


class SlimPreResNet(nn.Module):
    """The network-slimming paper's pre-activation ResNet (depth 9n+2), with channel_selection layers."""

    def __init__(self, num_classes: int = 10, depth: int = 20) -> None:
        super().__init__()
        n = (depth - 2) // 9
        planes = [8, 16, 32]
        self.inplanes = 8
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        layers = []
        for i, p in enumerate(planes):
            layers.append(self._make_layer(p, n, 1 if i == 0 else 2))
        self.layer1, self.layer2, self.layer3 = layers
        c = planes[-1] * 4
        self.bn = nn.BatchNorm2d(c)
        self.select = channel_selection(c)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(c, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False)
        layers = [SlimBottleneck(self.inplanes, planes, [self.inplanes, planes, planes], stride, downsample)]
        self.inplanes = planes * 4
        for _ in range(1, blocks):
            layers.append(SlimBottleneck(self.inplanes, planes, [self.inplanes, planes, planes]))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.select(self.bn(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))


class SlimDenseNet(nn.Module):
    """The network-slimming paper's DenseNet (BN -> select -> ReLU -> conv, then concat)."""

    def __init__(self, num_classes: int = 10, growth: int = 6, layers: int = 3) -> None:
        super().__init__()
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        mods = []
        for stage in range(2):
            for _ in range(layers):
                mods.append(_SlimDense(c, growth))
                c += growth
            if stage == 0:
                mods.append(_SlimTransition(c, c))
        self.dense = nn.Sequential(*mods)
        self.bn = nn.BatchNorm2d(c)
        self.select = channel_selection(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.select(self.bn(self.dense(self.conv1(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class _SlimDense(nn.Module):
    def __init__(self, c: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c)
        self.select = channel_selection(c)
        self.conv1 = nn.Conv2d(c, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        return torch.cat((x, out), 1)


class _SlimTransition(nn.Module):
    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c1)
        self.select = channel_selection(c1)
        self.conv1 = nn.Conv2d(c1, c2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.select(self.bn1(x)))), 2)


# ---------------------------------------------------------------------------- YOLO


class Conv(nn.Module):
    """YOLOv5/v8 Conv: conv, BN, SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """YOLOv5 (v5.0) Focus: space-to-depth by slicing the input, then a conv."""

    def __init__(self, c1: int, c2: int, k: int = 1) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 1.0, k: tuple[int, int] = (1, 3)) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0])
        self.cv2 = Conv(c_, c2, k[1])
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_)
        self.cv2 = Conv(c1, c_)
        self.cv3 = Conv(2 * c_, c2)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C2f(nn.Module):
    """YOLOv8 C2f: one conv, split in two (chunk), bottlenecks on the second half, concat of all."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, 1.0, (3, 3)) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_)
        self.cv2 = Conv(c_ * 4, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class FocusNet(nn.Module):
    """A YOLOv5 v5.0 backbone (Focus stem, C3, SPPF) as a classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.focus = Focus(3, 16, 3)
        self.body = nn.Sequential(Conv(16, 32, 3, 2), C3(32, 32, 1), Conv(32, 64, 3, 2), C3(64, 64, 2), SPPF(64, 64))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.focus(x)).mean((2, 3)))


class Detect(nn.Module):
    """YOLOv5 v6.2 Detect: per level a 1x1 conv, view/permute to (bs, na, ny, nx, no), sigmoid and the
    grid/anchor decode (in place), the levels concatenated; training mode returns the raw maps."""

    stride = None
    inplace = True

    def __init__(self, nc: int, anchors: tuple, ch: tuple) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor | tuple:
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                y = x[i].sigmoid()
                y[..., 0:2] = (y[..., 0:2] * 2 - 0.5 + self.grid[i]) * self.stride[i]
                y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
                z.append(y.view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def _make_grid(self, nx: int, ny: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        d, t = self.anchors[i].device, self.anchors[i].dtype
        shape = 1, self.na, ny, nx, 2
        y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape)
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid


class YoloV5(nn.Module):
    """YOLOv5 v6.2 layout (backbone, PAN neck, Detect) at a small width; `num_classes` detection classes."""

    def __init__(self, num_classes: int = 4, w: int = 8) -> None:
        super().__init__()
        self.b0 = Conv(3, w, 6, 2, 2)
        self.b1 = Conv(w, 2 * w, 3, 2)
        self.b2 = C3(2 * w, 2 * w)
        self.b3 = Conv(2 * w, 4 * w, 3, 2)
        self.b4 = C3(4 * w, 4 * w, 2)
        self.b5 = Conv(4 * w, 8 * w, 3, 2)
        self.b6 = SPPF(8 * w, 8 * w)
        self.h1 = Conv(8 * w, 4 * w)
        self.up = nn.Upsample(None, 2, "nearest")
        self.h2 = C3(8 * w, 4 * w, 1, False)
        self.h3 = Conv(4 * w, 4 * w, 3, 2)
        self.h4 = C3(8 * w, 8 * w, 1, False)
        self.detect = Detect(num_classes, ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119)), (4 * w, 8 * w))
        self.detect.stride = torch.tensor([8.0, 16.0])
        self.input_size = (3, 64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        h = self.h1(p4)
        o3 = self.h2(torch.cat([self.up(h), p3], 1))
        o4 = self.h4(torch.cat([self.h3(o3), h], 1))
        return self.detect([o3, o4])


class DFL(nn.Module):
    """Distribution focal loss integral (YOLOv8): a fixed 1x1 conv over a softmax of reg_max bins."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        x = torch.arange(c1, dtype=torch.float)
        self.conv.weight.data[:] = nn.Parameter(x.view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    anchor_points, stride_tensor = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, device=device, dtype=dtype) + offset
        sy = torch.arange(end=h, device=device, dtype=dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, dim: int = -1) -> torch.Tensor:
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


class DetectV8(nn.Module):
    """YOLOv8 Detect: a box branch (4 * reg_max channels, decoded by DFL) and a class branch per level,
    concatenated; in eval the boxes are decoded with anchors and strides."""

    def __init__(self, nc: int, ch: tuple, strides: tuple) -> None:
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), 16
        self.no = nc + self.reg_max * 4
        self.stride = torch.tensor(strides, dtype=torch.float)
        c2, c3 = max(16, ch[0] // 4, self.reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor | tuple:
        for i in range(self.nl):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
        if self.training:
            return x
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        x_cat = torch.cat([xi.view(x[0].shape[0], self.no, -1) for xi in x], 2)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1), x


class YoloV8(nn.Module):
    """YOLOv8 layout at a small width: C2f backbone with SPPF, PAN neck, DFL detect head."""

    def __init__(self, num_classes: int = 4, w: int = 8) -> None:
        super().__init__()
        self.b0 = Conv(3, w, 3, 2)
        self.b1 = Conv(w, 2 * w, 3, 2)
        self.b2 = C2f(2 * w, 2 * w, 1, True)
        self.b3 = Conv(2 * w, 4 * w, 3, 2)
        self.b4 = C2f(4 * w, 4 * w, 2, True)
        self.b5 = Conv(4 * w, 8 * w, 3, 2)
        self.b6 = SPPF(8 * w, 8 * w)
        self.up = nn.Upsample(None, 2, "nearest")
        self.h1 = C2f(12 * w, 4 * w)
        self.h2 = Conv(4 * w, 4 * w, 3, 2)
        self.h3 = C2f(12 * w, 8 * w)
        self.detect = DetectV8(num_classes, (4 * w, 8 * w), (8.0, 16.0))
        self.input_size = (3, 64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        o3 = self.h1(torch.cat([self.up(p4), p3], 1))
        o4 = self.h3(torch.cat([self.h2(o3), p4], 1))
        return self.detect([o3, o4])


# ---------------------------------------------------------------------------- the rest of a CIFAR zoo


class VGG(nn.Module):
    """Plain conv-BN-ReLU stacks from a config list with max pooling, flattened into the classifier."""

    def __init__(self, num_classes: int = 10, cfg: tuple = (16, "M", 32, "M", 64, 64, "M", 64, "M")) -> None:
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c1: int, c2: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c2)
        self.conv2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.shortcut = nn.Sequential()
        if stride != 1 or c1 != c2:
            self.shortcut = nn.Sequential(nn.Conv2d(c1, c2, 1, stride, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10, block: type = BasicBlock, blocks: tuple = (2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, c = [], 16
        for i, n in enumerate(blocks):
            for j in range(n):
                layers.append(block(c, 16 * 2**i, 2 if i and not j else 1))
                c = 16 * 2**i
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, out.size(3)).view(out.size(0), -1))


class Inception(nn.Module):
    """GoogLeNet: 1x1 | 1x1->3x3 | 1x1->3x3->3x3 | maxpool->1x1, concatenated."""

    def __init__(self, c: int, n1: int, r3: int, n3: int, r5: int, n5: int, pool: int) -> None:
        super().__init__()

        def cbr(a: int, b: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, k, padding=k // 2), nn.BatchNorm2d(b), nn.ReLU(True)]

        self.b1 = nn.Sequential(*cbr(c, n1, 1))
        self.b2 = nn.Sequential(*cbr(c, r3, 1), *cbr(r3, n3, 3))
        self.b3 = nn.Sequential(*cbr(c, r5, 1), *cbr(r5, n5, 3), *cbr(n5, n5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), *cbr(c, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(True))
        self.a3 = Inception(32, 16, 16, 24, 8, 8, 8)
        self.b3 = Inception(56, 24, 16, 32, 8, 16, 16)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.a4 = Inception(88, 32, 16, 32, 8, 16, 16)
        self.linear = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.a4(self.pool(self.b3(self.a3(self.pre(x)))))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.linear(out.view(out.size(0), -1))


class MobileNet(nn.Module):
    """MobileNet v1: depthwise 3x3 then pointwise 1x1, each with BN and ReLU."""

    cfg = (32, (64, 2), 64, (128, 2), 128)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, c = [], 16
        for v in self.cfg:
            out, stride = v if isinstance(v, tuple) else (v, 1)
            layers += [nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, out.size(2)).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2: expand 1x1, depthwise 3x3, linear project; a projected shortcut when widths differ."""

    def __init__(self, c1: int, c2: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        mid = expansion * c1
        self.conv1 = nn.Conv2d(c1, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c2)
        self.shortcut = nn.Sequential()
        if stride == 1 and c1 != c2:
            self.shortcut = nn.Sequential(nn.Conv2d(c1, c2, 1, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn1(self.conv1(x)))
        out = F.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    cfg = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2))  # expansion, out, blocks, first stride

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, c = [], 16
        for e, out, n, s in self.cfg:
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(c, out, e, stride))
                c = out
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(c, 128, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(128)
        self.linear = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu6(self.bn1(self.conv1(x))))
        out = F.relu6(self.bn2(self.conv2(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).view(out.size(0), -1))


class PreActSEBlock(nn.Module):
    """SENet on a pre-activation block: the SE scales the residual branch before the add."""

    def __init__(self, c1: int, c2: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False)
        self.fc1 = nn.Conv2d(c2, c2 // 4, 1)
        self.fc2 = nn.Conv2d(c2 // 4, c2, 1)
        if stride != 1 or c1 != c2:
            self.shortcut = nn.Sequential(nn.Conv2d(c1, c2, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        w = F.avg_pool2d(out, out.size(2))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(w))))
        return out * w + shortcut


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layers = nn.Sequential(PreActSEBlock(16, 16, 1), PreActSEBlock(16, 32, 2), PreActSEBlock(32, 32, 1))
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, 16).view(out.size(0), -1))


class RegNetX(nn.Module):
    """RegNetX: the RegNetY block without squeeze-excitation (1x1, grouped 3x3, 1x1, residual)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(bn_conv(3, 16, 3), nn.ReLU())
        self.body = nn.Sequential(XBlock(16, 24, 8, 1), XBlock(24, 48, 8, 2), XBlock(48, 48, 8, 1))
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1))


class XBlock(nn.Module):
    def __init__(self, c1: int, c2: int, group_width: int, stride: int) -> None:
        super().__init__()
        self.a = bn_conv(c1, c2)
        self.b = bn_conv(c2, c2, 3, stride, g=c2 // group_width)
        self.c = bn_conv(c2, c2)
        self.shortcut = bn_conv(c1, c2, 1, stride) if stride != 1 or c1 != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.c(F.relu(self.b(F.relu(self.a(x))))) + self.shortcut(x))


class Root(nn.Module):
    """DLA aggregation: the children's outputs concatenated, a 1x1 conv-BN-ReLU."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return F.relu(self.bn(self.conv(torch.cat(xs, 1))))


class Tree(nn.Module):
    """SimpleDLA's tree: level 1 is two residual blocks and a root over both; deeper levels nest."""

    def __init__(self, c1: int, c2: int, level: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.root = Root(2 * c2, c2)
        if level == 1:
            self.left, self.right = BasicBlock(c1, c2, stride), BasicBlock(c2, c2, 1)
        else:
            self.left, self.right = Tree(c1, c2, level - 1, stride), Tree(c2, c2, level - 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.left(x)
        return self.root([out1, self.right(out1)])


class DLA(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.base = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True))
        self.layer1 = Tree(16, 32, 1, 1)
        self.layer2 = Tree(32, 48, 2, 2)
        self.linear = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer2(self.layer1(self.base(x)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class SepConv(nn.Module):
    """PNASNet's separable conv: one grouped conv with as many groups as input channels, then BN."""

    def __init__(self, c1: int, c2: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c2, k, stride, (k - 1) // 2, bias=False, groups=c1)
        self.bn1 = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


class CellA(nn.Module):
    """PNASNet-A: sep conv 7x7 + max pool (with a 1x1 conv-BN when striding), summed."""

    def __init__(self, c1: int, c2: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.sep_conv1 = SepConv(c1, c2, 7, stride)
        if stride == 2:
            self.conv1 = nn.Conv2d(c1, c2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.sep_conv1(x)
        y2 = F.max_pool2d(x, 3, self.stride, 1)
        if self.stride == 2:
            y2 = self.bn1(self.conv1(y2))
        return F.relu(y1 + y2)


class CellB(nn.Module):
    """PNASNet-B: (sep 7x7 + sep 3x3) and (max pool + sep 5x5), concatenated, reduced by a 1x1 conv-BN."""

    def __init__(self, c1: int, c2: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.sep_conv1 = SepConv(c1, c2, 7, stride)
        self.sep_conv2 = SepConv(c1, c2, 3, stride)
        self.sep_conv3 = SepConv(c1, c2, 5, stride)
        if stride == 2:
            self.conv1 = nn.Conv2d(c1, c2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c2)
        self.conv2 = nn.Conv2d(2 * c2, c2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = F.relu(self.sep_conv1(x) + self.sep_conv2(x))
        y3 = F.max_pool2d(x, 3, self.stride, 1)
        if self.stride == 2:
            y3 = self.bn1(self.conv1(y3))
        y2 = F.relu(y3 + self.sep_conv3(x))
        return F.relu(self.bn2(self.conv2(torch.cat([y1, y2], 1))))


class PNASNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.cells = nn.Sequential(CellA(16, 16), CellB(16, 16), CellA(16, 32, 2), CellB(32, 32),
                                   CellB(32, 64, 2))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cells(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, 8).view(out.size(0), -1))


# ---------------------------------------------------------------------------- layers computing through the functional ops


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm and activation in one module (timm's BatchNormAct2d): the functional batch norm, then the act."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return F.relu(x)


class FrozenBN(nn.Module):
    """A frozen BatchNorm: gamma, beta and the statistics in buffers, applied elementwise."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.rand(c) + 0.01)
        self.register_buffer("bias", torch.randn(c) * 0.1)
        self.register_buffer("running_mean", torch.randn(c) * 0.1)
        self.register_buffer("running_var", torch.rand(c) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + 1e-5).rsqrt()
        return x * scale + (self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale)


class SameConv(nn.Conv2d):
    """TensorFlow's 'same' padding, computed in forward, then the functional conv (timm's Conv2dSame)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, k, s = x.shape[-1], self.kernel_size[0], self.stride[0]
        pad = max((-(-size // s) - 1) * s + k - size, 0)
        x = F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MixedConv(nn.ModuleDict):
    """Depthwise convs of different kernels, each on its part of the channels, split by `self.splits`."""

    def __init__(self, c: int, kernels: tuple[int, ...] = (3, 5)) -> None:
        super().__init__()
        splits = [c // len(kernels)] * len(kernels)
        splits[0] += c - sum(splits)
        for i, (k, n) in enumerate(zip(kernels, splits, strict=True)):
            self[str(i)] = SameConv(n, n, k, groups=n, bias=False)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(p) for conv, p in zip(self.values(), parts, strict=True)], 1)


class CrossStage(nn.Module):
    """CSP: a conv expands, half goes through the blocks and half around, split by `expand_chs // 2`."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.expand_chs = 2 * c2
        self.conv_exp = nn.Sequential(SameConv(c1, 2 * c2, 1, bias=False), BatchNormAct(2 * c2))
        self.block = nn.Sequential(SameConv(c2, c2, 3, bias=False), FrozenBN(c2))
        self.mixed = nn.Sequential(MixedConv(c2), BatchNormAct(c2))
        self.conv_transition = nn.Sequential(nn.Conv2d(2 * c2, c2, 1, bias=False), BatchNormAct(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, xb = self.conv_exp(x).split(self.expand_chs // 2, dim=1)
        xb = self.mixed(F.relu(self.block(xb)))
        return self.conv_transition(torch.cat([xs, xb], 1))


class FunctionalLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class TimmStyle(nn.Module):
    """The layers timm builds its CNNs from, written the way timm writes them."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(SameConv(3, 16, 3, 2, bias=False), BatchNormAct(16))
        self.stage1 = CrossStage(16, 24)
        self.stage2 = CrossStage(24, 32)
        self.fc = FunctionalLinear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stage2(self.stage1(self.stem(x))).mean((2, 3)))


# ---------------------------------------------------------------------------- no BatchNorm


class LeNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


ZOO = {
    "ShuffleNetG2": ShuffleNetG2,
    "ShuffleNetV2": ShuffleNetV2,
    "ResNeXt": ResNeXt,
    "EfficientNetLite": EfficientNetLite,
    "RegNetY": RegNetY,
    "PreActResNet": PreActResNet,
    "DenseNet": DenseNet,
    "DPN": DPN,
    "SlimPreResNet": SlimPreResNet,
    "SlimDenseNet": SlimDenseNet,
    "FocusNet": FocusNet,
    "YoloV5": YoloV5,
    "YoloV8": YoloV8,
    "VGG": VGG,
    "ResNet": ResNet,
    "GoogLeNet": GoogLeNet,
    "MobileNet": MobileNet,
    "MobileNetV2": MobileNetV2,
    "SENet": SENet,
    "RegNetX": RegNetX,
    "DLA": DLA,
    "PNASNet": PNASNet,
    "TimmStyle": TimmStyle,
}
def input_size(name: str) -> tuple[int, int, int]:
    return (3, 64, 64) if name.startswith("Yolo") else (3, 32, 32)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """|gamma| spread like after sparse training (log-normal), BN statistics and biases set."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.from_numpy(rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, m.num_features).astype(np.float32)))
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, m.num_features).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features).astype(np.float32)))
    return model.eval()


# ---------------------------------------------------------------------------- how a prune is checked


def masked_copy(model: nn.Module, groups: list, plan) -> nn.Module:
    """The original with every cut channel zeroed where a conv or linear layer reads it."""
    model = copy.deepcopy(model)
    kept = {g.root: g for g in plan.groups}
    with torch.no_grad():
        for g in groups:
            pg = kept[g.root]
            gone = np.setdiff1d(np.arange(g.total), pg.kept_idxs)
            for m in g.members:
                if m.side != "in" or not gone.size:
                    continue
                layer = model.get_submodule(m.name)
                for c in m.idxs[np.isin(m.root_idxs, gone)]:
                    if isinstance(layer, nn.Linear):
                        layer.weight[:, c] = 0
                    elif layer.transposed:
                        layer.weight[c] = 0
                    else:
                        cpg = layer.in_channels // layer.groups
                        opg = layer.out_channels // layer.groups
                        grp = c // cpg
                        layer.weight[grp * opg:(grp + 1) * opg, c % cpg] = 0
    return model


def flat(out) -> list[torch.Tensor]:
    """Every tensor of a model's output (detection heads return nested tuples and lists)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def max_rel_diff(a, b) -> float:
    """The largest difference between two outputs, relative to the largest value of the first (>= 1)."""
    worst = 0.0
    for x, y in zip(flat(a), flat(b), strict=True):
        if x.shape != y.shape:
            raise ValueError(f"output shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        worst = max(worst, float((x - y).abs().max()) / max(1.0, float(x.abs().max())))
    return worst
