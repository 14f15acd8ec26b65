"""Batches decoded from image files in DataLoader worker processes, with bounded memory.

The main process only plans: for each batch it sends (epoch, batch number, sample
indices) to a worker, which decodes those files, augments and normalises them and
sends back one finished batch. At most `workers x prefetch` batches are in flight,
so memory does not grow with the dataset; the file list itself is a compact table
(engine.data.files). The order and the augmentation come from the same
(seed, epoch, rank, batch) rules as the in-memory loader, so both give the same
batches for the same seed, and resuming inside an epoch starts at its batch
without decoding the ones before.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from engine.data import decode
from engine.data.augment import Augmenter
from engine.data.files import FileTable
from engine.data.loader import fill_colour
from engine.data.order import EpochOrder, augmentation_generator
from engine.errors import DataError

PREFETCH = 2  # batches queued per worker


class _Plan:
    """The DataLoader's sampler: iterated in the main process at the start of every pass,
    so it always reflects the loader's current epoch and start batch."""

    def __init__(self, order: StreamLoader) -> None:
        self.order = order

    def __len__(self) -> int:
        return len(self.order) - self.order.start

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        epoch = self.order.epoch
        for number, idx in self.order.batches():
            yield epoch, number, idx.numpy()


class _FileBatches(Dataset):
    """Runs in the workers: one planned batch -> (x float32 normalised, y int64)."""

    def __init__(
        self,
        files: FileTable,
        labels: np.ndarray,
        *,
        size: int,
        scale: torch.Tensor,
        shift: torch.Tensor,
        augmenter: Augmenter | None,
        seed: int,
        rank: int,
    ) -> None:
        self.files = files
        self.labels = labels
        self.size = size
        self.scale, self.shift = scale, shift
        self.augmenter = augmenter
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor] | str:
        epoch, number, idx = item
        try:
            return self._batch(epoch, number, idx)
        except DataError as exc:
            return str(exc)  # raised again in the main process, without a worker traceback

    def _batch(self, epoch: int, number: int, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        aug = self.augmenter
        drawn = aug.draw(augmentation_generator(self.seed, epoch, self.rank, number), len(idx)) if aug else None
        out = np.empty((len(idx), 3, self.size, self.size), dtype=np.uint8)
        for k, i in enumerate(idx):
            box = None
            if aug is not None and aug.frames_source:
                box = _box_for(aug, drawn, k)
            out[k] = decode.image(self.files[int(i)], self.size, box)
        batch = torch.from_numpy(out)
        if aug is not None:
            batch = aug.apply(batch, drawn, framed=True)
        x = _output(batch.shape)
        torch.mul(batch, self.scale, out=x).add_(self.shift)
        return x, torch.from_numpy(self.labels[idx])


def _output(shape: torch.Size) -> torch.Tensor:
    """The float batch; in a worker process allocated in shared memory, as DataLoader's own
    collate does, so sending it to the main process needs no extra copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    storage = torch.empty(0)._typed_storage()._new_shared(shape.numel())
    return torch.empty(0).new(storage).view(shape)


def _box_for(aug: Augmenter, drawn: list, k: int):
    return lambda width, height: aug.source_box(drawn, k, width, height)


class StreamLoader(EpochOrder):
    """Iterable of (x float32 N,C,H,W normalised, y int64 N) decoded from image files.

    The same interface as TensorLoader (len, set_epoch(epoch, start), indices,
    dataset_size, num_samples). `workers` 0 decodes in this process; otherwise the
    worker processes start on the first pass and stay for the next ones when
    `persistent`. `pin_memory` pins the batches for asynchronous copies to CUDA.
    """

    def __init__(
        self,
        files: FileTable,
        labels: np.ndarray,
        *,
        image_size: int,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool,
        augment: Any = False,
        workers: int = 0,
        persistent: bool = True,
        pin_memory: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad_shards: bool = True,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1 or labels.shape[0] != len(files):
            raise ValueError(f"labels must be 1-d with {len(files)} entries, got {labels.shape}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean/std need 3 values, got {len(mean)} and {len(std)}")
        super().__init__(
            len(files), batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
            world_size=world_size, drop_last=drop_last, pad_shards=pad_shards,
        )
        self.files = files
        self.labels = labels
        self.image_size = image_size
        self.workers = workers
        self.persistent = persistent and workers > 0
        self.pin_memory = pin_memory
        self._fill = fill_colour(mean)
        augmenter = Augmenter(augment, image_size, self._fill)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._dataset = _FileBatches(
            files, labels, size=image_size, scale=1.0 / (255.0 * std_t), shift=-mean_t / std_t,
            augmenter=augmenter or None, seed=seed, rank=rank,
        )
        self._loader: DataLoader | None = None

    @property
    def augment(self) -> bool:
        return self._dataset.augmenter is not None

    @augment.setter
    def augment(self, value: Any) -> None:
        """Replace the ops (a `data.augment` value); e.g. False on a copy for unaugmented passes.
        Workers hold their own copy of the ops, so they restart on the next pass."""
        self._dataset.augmenter = Augmenter(value, self.image_size, self._fill) or None
        self._loader = None

    def __copy__(self) -> StreamLoader:
        """A loader over the same files with its own epoch, ops and worker processes."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._dataset = copy.copy(self._dataset)
        clone._loader = None
        return clone

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            extra: dict[str, Any] = {}
            if self.workers > 0:
                extra = {"prefetch_factor": PREFETCH, "persistent_workers": self.persistent}
            self._loader = DataLoader(
                self._dataset, batch_size=None, sampler=_Plan(self), num_workers=self.workers,
                collate_fn=_as_is, pin_memory=self.pin_memory, **extra,
            )
        return self._loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.start >= len(self):
            self.start = 0  # a resumed pass with nothing left; the next pass is whole again
            return
        for item in self._data_loader():
            if isinstance(item, str):
                raise DataError(item)
            yield item


def _as_is(item: Any) -> Any:
    return item
