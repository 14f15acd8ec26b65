"""Per-channel mean and std of uint8 images, for normalisation."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class ChannelStats:
    """Running per-channel sums over uint8 chunks (float64, so no float copy of a split)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None
        self.count = 0

    def add(self, chunk: torch.Tensor) -> None:
        part = chunk.to(torch.float64).div_(255.0)
        sums, sq = part.sum(dim=(0, 2, 3)), part.square().sum(dim=(0, 2, 3))
        if self.total is None or self.total_sq is None:
            self.total, self.total_sq = sums, sq
        else:
            self.total += sums
            self.total_sq += sq
        self.count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.total is None or self.total_sq is None or self.count == 0:
            raise ValueError("cannot compute mean/std of an empty split")
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean.square()).clamp_min(0.0)
        # A constant channel would divide by zero when normalising.
        std = var.sqrt().clamp_min(1e-3)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def mean_std_of(chunks: Iterable[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stats = ChannelStats()
    for chunk in chunks:
        stats.add(chunk)
    return stats.result()


def channel_mean_std(
    images: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel on the [0, 1] scale, summed chunk by chunk."""
    if images.shape[0] == 0:
        raise ValueError("cannot compute mean/std of an empty split")
    return mean_std_of(images[start : start + chunk] for start in range(0, images.shape[0], chunk))
