"""One-dimensional k-means for weight sharing (Han et al., Deep Compression, 2016).

Linear initialisation over [min, max] (the paper's finding: it keeps the rare large weights,
which matter most, their own centroids). In one dimension the clusters are intervals, so each
Lloyd step is a sort-free `searchsorted` against the midpoints between centroids.
"""

from __future__ import annotations

import numpy as np


def kmeans_1d(values: np.ndarray, k: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float32 (<= k,), codes uint8/uint16 (n,)) with values ~ centroids[codes]."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    v = np.asarray(values, dtype=np.float64).ravel()
    dtype = np.uint8 if k <= 256 else np.uint16
    if v.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, dtype)
    unique = np.unique(v)
    if unique.size <= k:  # nothing to share: every distinct value is its own centroid
        return unique.astype(np.float32), np.searchsorted(unique, v).astype(dtype)
    centroids = np.linspace(v.min(), v.max(), k)
    codes = np.zeros(v.size, dtype=np.int64)
    for _ in range(iters):
        codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, v)
        counts = np.bincount(codes, minlength=k)
        sums = np.bincount(codes, weights=v, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, v)
    return centroids.astype(np.float32), codes.astype(dtype)
