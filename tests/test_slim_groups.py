"""Coupled channel groups: residual adds, concats, depthwise convs, classifier and ignore rules, scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import engine.models as models
from engine.errors import PruneError
from engine.slim.groups import find_groups, group_scores

from helpers import SMALL_SLIMMABLE as SMALL


def cbr(c1: int, c2: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c2),
        nn.ReLU(),
    )


class ResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.a1 = cbr(8, 6)
        self.a2 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.b1 = cbr(8, 5)
        self.b2 = nn.Sequential(nn.Conv2d(5, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12))
        self.proj = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12, 4)
        self.input_size = (3, 8, 8)
        self.default_ignore = ["fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.a2(self.a1(x)))
        x = torch.relu(self.proj(x) + self.b2(self.b1(x)))
        return self.fc(x.mean((2, 3)))


class ConcatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = cbr(3, 4)
        self.right = cbr(3, 6)
        self.fuse = cbr(10, 8, 1)
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.spp = cbr(16, 8, 1)  # takes concat(x, pool(x)) of fuse's output: each channel twice
        self.fc = nn.Linear(8, 3)
        self.input_size = (3, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([self.left(x), self.right(x)], 1))
        x = self.spp(torch.cat([x, self.pool(x)], 1))
        return self.fc(x.mean((2, 3)))


class DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 4)
        self.expand = cbr(4, 12, 1)
        self.dw = cbr(12, 12, 3, groups=12)
        self.project = nn.Sequential(nn.Conv2d(12, 4, 1, bias=False), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 3, 1)  # conv classifier: its outputs are the model's outputs
        self.input_size = (3, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        return self.head(x).mean((2, 3))


def by_root(groups):
    return {g.root: g for g in groups}


def with_conv(groups, conv: str):
    """The group that cuts `conv`'s output channels (roots depend on graph traversal order)."""
    return next(g for g in groups if conv in g.convs)


def test_residual_add_couples_its_convs_and_bns():
    groups = find_groups(ResidualNet())
    stem = with_conv(groups, "stem.0")
    assert set(stem.layers) == {"stem.1", "a2.1"} and set(stem.convs) == {"stem.0", "a2.0"}
    assert stem.total == 8 and stem.prunable
    ins = {m.name for m in stem.members if m.side == "in"}
    assert ins == {"a1.0", "b1.0", "proj.0"}
    out = with_conv(groups, "proj.0")
    assert set(out.layers) == {"proj.1", "b2.1"} and set(out.convs) == {"proj.0", "b2.0"}
    assert out.total == 12 and out.prunable
    assert with_conv(groups, "a1.0").layers == ["a1.1"] and with_conv(groups, "a1.0").total == 6
    assert not with_conv(groups, "fc").prunable
    assert sorted(g.total for g in groups) == [4, 5, 6, 8, 12]


def test_concat_maps_index_ranges_and_repeats():
    groups = by_root(find_groups(ConcatNet()))
    left, right = groups["left.0"], groups["right.0"]
    fuse_in_left = next(m for m in left.members if m.name == "fuse.0")
    fuse_in_right = next(m for m in right.members if m.name == "fuse.0")
    assert fuse_in_left.side == fuse_in_right.side == "in"
    np.testing.assert_array_equal(np.sort(fuse_in_left.idxs), np.arange(0, 4))
    np.testing.assert_array_equal(np.sort(fuse_in_right.idxs), np.arange(4, 10))
    # spp.0 sees each of fuse's 8 channels twice (x and pool(x))
    spp_in = next(m for m in groups["fuse.0"].members if m.name == "spp.0")
    np.testing.assert_array_equal(np.sort(spp_in.idxs), np.arange(16))
    np.testing.assert_array_equal(np.bincount(spp_in.root_idxs), [2] * 8)
    assert not groups["fc"].prunable and all(g.prunable for r, g in groups.items() if r != "fc")


def test_depthwise_conv_is_coupled_with_its_input_conv():
    groups = by_root(find_groups(DepthwiseNet()))
    expand = with_conv(groups.values(), "expand.0")
    assert set(expand.convs) == {"expand.0", "dw.0"}
    assert set(expand.layers) == {"expand.1", "dw.1"}
    assert expand.total == 12 and expand.prunable
    stem = with_conv(groups.values(), "stem.0")
    assert set(stem.layers) == {"stem.1", "project.1"}
    head = groups["head"]
    assert not head.prunable and "output" in head.reason


def test_ignore_patterns_and_missing_bn_leave_groups_whole():
    groups = find_groups(ResidualNet(), ignore=["a1.*"])
    a1 = with_conv(groups, "a1.0")
    assert not a1.prunable and "a1.0" in a1.reason and "'a1.*'" in a1.reason
    assert with_conv(groups, "b1.0").prunable

    class NoBnAfter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = cbr(4, 5)
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(self.b(torch.relu(self.a(x))).mean((2, 3)))

    groups = by_root(find_groups(NoBnAfter(), input_shape=(3, 6, 6)))
    assert not groups["a"].prunable and "BatchNorm" in groups["a"].reason
    assert groups["b.0"].prunable


def test_grouped_conv_cuts_the_same_position_in_every_group():
    model = nn.Sequential(
        cbr(3, 8), cbr(8, 8, 3, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )
    groups = find_groups(model, input_shape=(3, 6, 6))
    first, grouped = with_conv(groups, "0.0"), with_conv(groups, "1.0")
    assert first is not grouped and first.prunable and grouped.prunable
    assert (first.total, first.width) == (4, 2) and (grouped.total, grouped.width) == (4, 2)
    reads = next(m for m in first.members if m.name == "1.0" and m.side == "in")
    np.testing.assert_array_equal(reads.root_idxs, [0, 1, 2, 3, 0, 1, 2, 3])  # channel c and c + 4


def test_missing_input_shape_is_a_clear_error():
    with pytest.raises(PruneError, match="input_shape"):
        find_groups(nn.Sequential(cbr(3, 4)))


def test_group_scores_max_mean_l2_over_member_bns():
    model = ResidualNet()
    g1 = np.linspace(0.1, 0.8, 8).astype(np.float32)
    g2 = np.linspace(-0.9, 0.3, 8).astype(np.float32)
    gammas = {"stem.1": g1, "a2.1": g2}
    stem = with_conv(find_groups(model), "stem.0")
    a, b = np.abs(g1), np.abs(g2)
    np.testing.assert_allclose(group_scores(stem, gammas, "max"), np.maximum(a, b), rtol=1e-6)
    np.testing.assert_allclose(group_scores(stem, gammas, "mean"), (a + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(
        group_scores(stem, gammas, "l2"), np.sqrt((a**2 + b**2) / 2), rtol=1e-6
    )
    with pytest.raises(PruneError, match="score"):
        group_scores(stem, gammas, "median")
    # a member without gamma (affine=False) is skipped; channels with no gamma at all are an error
    np.testing.assert_allclose(group_scores(stem, {"stem.1": g1}, "mean"), a, rtol=1e-6)
    with pytest.raises(PruneError, match="a2.1"):
        group_scores(stem, {}, "max")




@pytest.mark.parametrize("arch", sorted(SMALL))
def test_builtins_group_every_conv_and_never_the_classifier(arch):
    model = models.build(arch, 10, **SMALL[arch])
    groups = find_groups(model)
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    grouped = {c for g in groups for c in g.convs}
    assert convs <= grouped
    classifier = [
        g
        for g in groups
        if any(m.side == "out" and m.name in model.default_ignore for m in g.members)
    ]
    assert classifier and all(not g.prunable for g in classifier)
    for g in groups:
        if g.prunable:
            assert g.layers, g


def test_batchnorm_without_affine_leaves_its_group_whole():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4, affine=False),
        nn.ReLU(),
        cbr(4, 6),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 2),
    )
    groups = find_groups(model, input_shape=(3, 8, 8))
    first = with_conv(groups, "0")
    assert not first.prunable and "affine=False" in first.reason
    assert with_conv(groups, "3.0").prunable
