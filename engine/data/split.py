"""A deterministic, class-stratified held-out split for datasets without a val split."""

from __future__ import annotations

import numpy as np


def holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): about `fraction` of every class goes to val, chosen by `seed`.

    Stratified so small datasets keep every class in both parts; each class keeps
    at least one training sample.
    """
    rng = np.random.default_rng([int(seed) % (1 << 64), 2])
    train_parts, val_parts = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(int(round(len(members) * fraction)), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.empty(0, np.int64)
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, np.int64)
    return train.astype(np.int64), val.astype(np.int64)
