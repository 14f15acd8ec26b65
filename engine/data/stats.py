"""Per-channel mean and std of uint8 images, for normalisation."""

from __future__ import annotations

from collections.abc import Iterable

import torch

_ELEMENTS = 1 << 22  # values squared at a time (an int32 temporary of 16 MiB)


class ChannelStats:
    """Running per-channel sums over uint8 chunks, in exact integers.

    Integer sums do not depend on how the images are split into chunks, so the same
    images give the same mean/std on every path; the only temporary is a bounded
    int32 square, whatever the chunk or image size.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None
        self.count = 0

    def add(self, chunk: torch.Tensor) -> None:
        n, c, h, w = chunk.shape
        if self.total is None or self.total_sq is None:
            self.total = torch.zeros(c, dtype=torch.int64)
            self.total_sq = torch.zeros(c, dtype=torch.int64)
        step = max(1, _ELEMENTS // max(1, c * h * w))
        for start in range(0, n, step):
            part = chunk[start : start + step]
            self.total += part.sum(dim=(0, 2, 3), dtype=torch.int64)
            self.total_sq += part.to(torch.int32).square_().sum(dim=(0, 2, 3), dtype=torch.int64)
        self.count += n * h * w

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.total is None or self.total_sq is None or self.count == 0:
            raise ValueError("cannot compute mean/std of an empty split")
        mean = self.total.to(torch.float64) / (255.0 * self.count)
        mean_sq = self.total_sq.to(torch.float64) / (255.0**2 * self.count)
        var = (mean_sq - mean.square()).clamp_min(0.0)
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
    """Mean and std per channel on the [0, 1] scale, summed chunk by chunk (no float copy)."""
    if images.shape[0] == 0:
        raise ValueError("cannot compute mean/std of an empty split")
    return mean_std_of(images[start : start + chunk] for start in range(0, images.shape[0], chunk))
