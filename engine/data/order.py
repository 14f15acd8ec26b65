"""Which samples, in which order, a rank sees in an epoch: shared by both loaders.

The order is a function of (seed, epoch) only, so `set_epoch` and iterating gives
the same batches every time, which is what resuming a run relies on. With
`world_size > 1` every rank draws the same permutation and keeps its own stride of
it, like DistributedSampler. `pad_shards=True` repeats the first indices so all
ranks have the same number of batches (needed while gradients are synced);
`pad_shards=False` leaves the shards disjoint and unequal, so summing counts over
ranks gives exact evaluation figures.
"""

from __future__ import annotations

import math

import torch

from engine.data.seeding import derive_seed

# Tags that keep the permutation stream apart from the augmentation stream.
PERMUTATION = 0
AUGMENTATION = 1


class EpochOrder:
    def __init__(
        self,
        dataset_size: int,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad_shards: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self._size = int(dataset_size)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.pad_shards = pad_shards
        self.epoch = 0
        self.start = 0

    @property
    def dataset_size(self) -> int:
        """Samples in the whole split, over all ranks."""
        return self._size

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (padded shards included)."""
        n = self.dataset_size
        if self.pad_shards:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        """Batches per epoch (all of them, whatever `start` is)."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch whose order and augmentation the next passes use.

        `start` > 0 begins the next pass at that batch (resuming inside an epoch): the
        batches before it are skipped without being loaded, and the ones after are
        exactly those of an uninterrupted epoch. Later passes over the same epoch (a
        BatchNorm re-estimate at epoch end, say) start at its first batch again.
        """
        if start < 0:
            raise ValueError(f"start batch must be >= 0, got {start}")
        self.epoch = int(epoch)
        self.start = min(int(start), len(self))  # past the end: nothing left of this epoch

    def indices(self) -> torch.Tensor:
        """This rank's sample order for the current epoch."""
        n = self.dataset_size
        if self.shuffle and n > 0:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, PERMUTATION))
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

    def batches(self) -> list[tuple[int, torch.Tensor]]:
        """(batch number, sample indices) of this pass: the epoch from `start` on (then 0)."""
        start, self.start = self.start, 0
        order, bs = self.indices(), self.batch_size
        return [(i, order[i * bs : (i + 1) * bs]) for i in range(start, len(self))]



def augmentation_generator(seed: int, epoch: int, rank: int, batch: int) -> torch.Generator:
    """The generator of one batch's augmentation: independent of every other batch, so
    skipping batches (resume) or spreading them over worker processes changes nothing."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, rank, AUGMENTATION, batch))
