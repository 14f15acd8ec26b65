"""Split-free twins of Ultralytics' C2f-family blocks, so every channel they carry can be pruned.

C2f, C3k2, C2fPSA (and C2PSA) run one 1x1 conv `cv1` and split its output in two equal halves
(`chunk(2)` / `split((c, c))`): the first half goes straight to the final concat, the second feeds
the bottlenecks (and, with shortcuts, their residual chain). A split of one conv's output ties the
two halves to one width, which channel pruning cannot express. The twin holds the same weights as
two convs, `cv1a` (first half) and `cv1b` (second half), and computes the same outputs; each half
is then its own coupled group.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# attributes parse_model sets on every layer; DetectionModel's forward and printing read them
LAYER_ATTRS = ("i", "f", "type", "np")


def _conv_rows(conv_block: nn.Module, rows: slice) -> nn.Module:
    """A copy of an Ultralytics Conv (conv + BatchNorm + act) keeping output channels `rows`."""
    out = copy.deepcopy(conv_block)
    conv, bn = out.conv, out.bn
    conv.weight = nn.Parameter(conv.weight.detach()[rows].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[rows].clone())
    conv.out_channels = conv.weight.shape[0]
    bn.weight = nn.Parameter(bn.weight.detach()[rows].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[rows].clone())
    bn.running_mean = bn.running_mean[rows].clone()
    bn.running_var = bn.running_var[rows].clone()
    bn.num_features = bn.weight.shape[0]
    return out


class SplitC2f(nn.Module):
    """C2f / C3k2 / C2fPSA with `cv1` as two convs: y = [cv1a(x), cv1b(x), m0(cv1b(x)), ...]."""

    kind = "C2f"

    def __init__(self, block: nn.Module):
        super().__init__()
        c = block.cv1.conv.out_channels // 2
        self.cv1a = _conv_rows(block.cv1, slice(0, c))
        self.cv1b = _conv_rows(block.cv1, slice(c, 2 * c))
        self.cv2 = block.cv2
        self.m = block.m
        self.source = type(block).__name__  # the Ultralytics class it came from
        for attr in LAYER_ATTRS:
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1a(x), self.cv1b(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SplitC2PSA(SplitC2f):
    """C2PSA with `cv1` as two convs: cv2(cat(cv1a(x), m(cv1b(x))))."""

    kind = "C2PSA"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(torch.cat((self.cv1a(x), self.m(self.cv1b(x))), 1))


def _twin_class(module: nn.Module) -> type[SplitC2f] | None:
    from ultralytics.nn.modules import block

    if isinstance(module, block.C2f) and type(module).forward is block.C2f.forward:
        return SplitC2f
    if isinstance(module, block.C2PSA) and type(module).forward is block.C2PSA.forward:
        return SplitC2PSA
    return None


def split_blocks(model: nn.Module) -> int:
    """Replace every C2f-family block of `model` by its split-free twin, in place; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            twin = _twin_class(child)
            if twin is not None:
                setattr(parent, name, twin(child))
                count += 1
    return count
