"""Batches cut from one in-memory uint8 tensor by indexing a permutation."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from engine.data.augment import crop_flip
from engine.data.seeding import derive_seed

# Tags that keep the permutation stream apart from the augmentation stream.
_PERMUTATION = 0
_AUGMENTATION = 1


class TensorLoader:
    """Iterable of (x float32 N,C,H,W normalised, y int64 N) over one split held in memory.

    The epoch's order is fully determined by (seed, epoch): `set_epoch` then iterate
    gives the same batches every time, which is what resuming a run relies on. With
    `world_size > 1` every rank draws the same permutation and keeps its own stride
    of it, like DistributedSampler. `pad_shards=True` repeats the first indices so
    all ranks have the same number of batches (needed while gradients are synced);
    `pad_shards=False` leaves the shards disjoint and unequal, so summing counts
    over ranks gives exact validation figures.
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
        augment: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad_shards: bool = True,
        crop_pad: int = 4,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be 1-d with {images.shape[0]} entries, got {tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.pad_shards = pad_shards
        self.crop_pad = crop_pad
        self.epoch = 0
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
        # (u8 / 255 - mean) / std as one multiply-add on the float batch.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @property
    def dataset_size(self) -> int:
        """Samples in the whole split, over all ranks."""
        return int(self.images.shape[0])

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (padded shards included)."""
        n = self.dataset_size
        if self.pad_shards:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def indices(self) -> torch.Tensor:
        """This rank's sample order for the current epoch."""
        n = self.dataset_size
        if self.shuffle and n > 0:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _PERMUTATION))
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        if self.world_size == 1:
            return order
        if self.pad_shards and n > 0:
            total = math.ceil(n / self.world_size) * self.world_size
            extra = total - n
            if extra:
                order = torch.cat([order, order.repeat(math.ceil(extra / n))[:extra]])
        return order[self.rank :: self.world_size]

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 normalised with this split's mean/std."""
        return batch.to(torch.float32).mul_(self._scale).add_(self._shift)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        gen = None
        if self.augment:
            gen = torch.Generator().manual_seed(
                derive_seed(self.seed, self.epoch, self.rank, _AUGMENTATION)
            )
        bs = self.batch_size
        for i in range(len(self)):
            idx = order[i * bs : (i + 1) * bs]
            batch = self.images[idx]
            if gen is not None:
                batch = crop_flip(batch, self.crop_pad, gen)
            yield self.normalize(batch), self.labels[idx]
