"""Per-channel mean and std of a uint8 image tensor, for normalisation."""

from __future__ import annotations

import torch


def channel_mean_std(
    images: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel on the [0, 1] scale.

    Summed chunk by chunk in float64 so a multi-GiB split never needs a float copy.
    """
    n, c = images.shape[0], images.shape[1]
    if n == 0:
        raise ValueError("cannot compute mean/std of an empty split")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    # A constant channel would divide by zero when normalising.
    std = var.sqrt().clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
