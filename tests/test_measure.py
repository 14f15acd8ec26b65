"""measure: params, FLOPs (FlopCounterMode), latency, size on disk, profile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.measure import count_flops, count_params, latency_ms, profile, size_on_disk


def small() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_count_params_counts_parameters_not_buffers():
    assert count_params(small()) == (3 * 8 * 9 + 8) + (8 + 8) + (8 * 5 + 5)


def test_count_flops_is_two_per_multiply_add_at_batch_one():
    # conv: 2 * out * in * k * k * H * W ; linear: 2 * in * out (BN, ReLU, pooling are not counted)
    assert count_flops(small(), (3, 6, 6)) == 2 * 8 * 3 * 9 * 36 + 2 * 8 * 5


def test_measuring_leaves_mode_and_batchnorm_statistics_alone():
    model = small().train()
    stats = model[1].running_mean.clone()
    count_flops(model, (3, 6, 6))
    latency_ms(model, (3, 6, 6), batch=2, warmup=1, runs=2)
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, stats)


def test_latency_is_a_positive_median():
    ms = latency_ms(small(), (3, 8, 8), batch=4, warmup=1, runs=3)
    assert isinstance(ms, float) and ms > 0
    with pytest.raises(ValueError, match="runs"):
        latency_ms(small(), (3, 8, 8), batch=1, runs=0)


def test_size_on_disk(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(small().state_dict(), path)
    assert size_on_disk(path) == path.stat().st_size > count_params(small()) * 4


def test_profile_reports_all_figures():
    p = profile(small(), (3, 8, 8), "cpu")
    assert set(p) == {"params", "flops", "latency_b1_ms", "latency_b32_ms"}
    assert p["params"] == count_params(small()) and p["flops"] == count_flops(small(), (3, 8, 8))
    assert p["latency_b1_ms"] > 0 and p["latency_b32_ms"] > 0
