"""Train, val and test splits: the in-memory form every dataset loads into before it is wrapped in
loaders, and the deterministic, class-stratified held-out splits for datasets that lack their own.

numpy only at import (image folders carve their file lists here); torch loads where tensors are cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import DataError

if TYPE_CHECKING:
    import torch

# Separate random streams per split, so adding a test split leaves the val choice alone
# when there is no test split (test_fraction 0 picks nothing and draws nothing that matters).
_VAL_STREAM = 2
_TEST_STREAM = 3


def holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): about `fraction` of every class goes to val, chosen by `seed`.

    Stratified so small datasets keep every class in both parts; each class keeps
    at least one training sample.
    """
    train, val, _ = split_indices(labels, val_fraction=fraction, test_fraction=0.0, seed=seed)
    return train, val


def split_indices(
    labels: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: Sequence[str] | None = None,
    source: str = "dataset",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test), each sorted; fractions are of every class's images.

    The test part is drawn first from its own stream, then val from what is left.
    A class left without a test image (when a test split is asked for) or without a
    training image is a DataError naming the class and the fix; a class may end up
    without val images, as the val split only selects epochs.
    """
    labels = np.asarray(labels)
    test_rng = np.random.default_rng([int(seed) % (1 << 64), _TEST_STREAM])
    val_rng = np.random.default_rng([int(seed) % (1 << 64), _VAL_STREAM])
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    short_test: list[tuple[int, int]] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        total = len(members)
        rest = members
        if test_fraction > 0:
            shuffled = test_rng.permutation(members)
            n_test = int(round(total * test_fraction))
            if n_test == 0 or n_test >= total:
                short_test.append((int(c), total))
                continue
            parts["test"].append(shuffled[:n_test])
            rest = np.sort(shuffled[n_test:])
        shuffled = val_rng.permutation(rest)
        n_val = min(int(round(total * val_fraction)), len(rest) - 1)
        parts["val"].append(shuffled[:n_val])
        parts["train"].append(shuffled[n_val:])
    if short_test:
        raise DataError(_short_test_message(short_test, test_fraction, class_names, source))
    out = []
    for key in ("train", "val", "test"):
        chunks = parts[key]
        out.append(np.sort(np.concatenate(chunks)).astype(np.int64) if chunks else np.empty(0, np.int64))
    return out[0], out[1], out[2]


def _short_test_message(
    short: list[tuple[int, int]], fraction: float, names: Sequence[str] | None, source: str
) -> str:
    def name(c: int) -> str:
        return repr(names[c]) if names is not None and c < len(names) else str(c)

    shown = ", ".join(f"{name(c)} ({n} images)" for c, n in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    smallest = min(n for _, n in short)
    if smallest < 2:
        fix = "every class needs at least 2 images (one to train on, one to test on)"
    elif any(int(round(n * fraction)) >= n for _, n in short):
        fix = "lower data.test_fraction so every class keeps training images"
    else:
        fix = f"raise data.test_fraction to at least {1 / smallest:.3g} or add images"
    return (
        f"{source}: data.test_fraction={fraction} leaves a class without test or training "
        f"images: {shown}{more}; {fix}"
    )


@dataclass
class Splits:
    """Train, val and (optionally) test as uint8 (N, C, H, W) images with int64 labels.

    `val` selects epochs; `test` is held out from everything and only reported.
    `mean`/`std` are set when the dataset has standard values (CIFAR); otherwise
    they are computed from the train images.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def carve(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: list[str],
    source: str,
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(train, val, test) image/label pairs held out of one pool by class-stratified fractions."""
    import torch

    parts = split_indices(
        labels.numpy(),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=class_names,
        source=source,
    )
    return tuple((images[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in parts)


def no_test_fraction(test_fraction: float, source: str, own_test: str) -> None:
    """Datasets with their own test split refuse a carved one, so no split is silently ignored."""
    if test_fraction > 0:
        raise DataError(
            f"{source}: data.test_fraction={test_fraction}, but {source} has its own test split "
            f"({own_test}); remove data.test_fraction"
        )
