"""Batches cut from one in-memory uint8 tensor by indexing a permutation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from engine.data.augment import Augmenter
from engine.data.order import EpochOrder, augmentation_generator


def fill_colour(mean: Sequence[float]) -> list[int]:
    """The dataset's mean colour in uint8: what cutout paints (0 once normalised)."""
    return [min(255, max(0, int(round(m * 255)))) for m in mean]


class TensorLoader(EpochOrder):
    """Iterable of (x float32 N,C,H,W normalised, y int64 N) over one split held in memory.

    Order, sharding, `set_epoch(epoch, start)` and the augmentation random draws
    follow engine.data.order, shared with the streaming loader. `augment` is the
    `data.augment` value (true, false or a list of named ops).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool,
        augment: Any = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad_shards: bool = True,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be 1-d with {images.shape[0]} entries, got {tuple(labels.shape)}"
            )
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
        super().__init__(
            images.shape[0], batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
            world_size=world_size, drop_last=drop_last, pad_shards=pad_shards,
        )
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.augmenter = Augmenter(augment, int(images.shape[-1]), fill_colour(mean))
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
        # (u8 / 255 - mean) / std as one multiply-add on the float batch.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @property
    def augment(self) -> bool:
        return bool(self.augmenter)

    @augment.setter
    def augment(self, value: Any) -> None:
        """Replace the ops (a `data.augment` value); e.g. False on a copy for unaugmented passes."""
        self.augmenter = Augmenter(value, int(self.images.shape[-1]), self.augmenter.fill.tolist())

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 normalised with this split's mean/std."""
        return batch.to(torch.float32).mul_(self._scale).add_(self._shift)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        aug = self.augmenter
        for number, idx in self.batches():
            batch = self.images[idx]
            if aug:
                gen = augmentation_generator(self.seed, self.epoch, self.rank, number)
                batch = aug.apply(batch, aug.draw(gen, len(idx)))
            yield self.normalize(batch), self.labels[idx]
