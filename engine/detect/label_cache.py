"""Ultralytics' label cache (`labels/<split>.cache` beside a dataset's labels), read and written safely.

Ultralytics keeps the labels it scanned in a `.cache` file: `np.save` of a dict, read back with
`np.load(allow_pickle=True)`, i.e. an unpickling of a file that sits in the dataset folder. A
dataset is data, so the cache is read here by an unpickler that builds numpy arrays and nothing
else; a cache holding anything more is refused and Ultralytics scans the labels again (its loader
treats any failure as a stale cache) and writes a new one.

Writes go to a temporary file moved into place: two runs started together on one dataset both
scan and save it, and Ultralytics' own save (unlink, then write) made the second fail with "No such
file or directory" and let a reader see half a file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy

# what np.save writes for a dict of lists of arrays, numbers and strings (numpy 1.x and 2.x names)
ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class CacheRefused(pickle.UnpicklingError):
    """A label cache that holds something other than arrays."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise CacheRefused(f"a label cache may hold arrays only, not {module}.{name}")
        return super().find_class(module, name)


def load(path: Path) -> dict:
    """The cache dict at `path` (raises on a missing, truncated or refused file)."""
    with open(path, "rb") as f:
        version = npy.read_magic(f)
        _, _, dtype = npy.read_array_header_1_0(f) if version == (1, 0) else npy.read_array_header_2_0(f)
        if dtype != np.dtype(object):
            raise CacheRefused(f"{path} is not a label cache (an array of {dtype})")
        return _ArraysOnly(f).load().item()


def save(prefix: str, path: Path, x: dict, version: str) -> None:
    """Ultralytics' `save_dataset_cache_file`, atomically; a cache that cannot be written is a warning."""
    from ultralytics.utils import LOGGER

    from engine.atomic import atomic_file

    x["version"] = version
    try:
        with atomic_file(path) as f:
            np.save(f, x)
        LOGGER.info(f"{prefix}New cache created: {path}")
    except OSError as e:
        LOGGER.warning(f"{prefix}Cache not saved to {path}: {e}")


def install() -> None:
    """Ultralytics' dataset code reads and writes its label caches through the two functions above."""
    from ultralytics.data import dataset, utils

    for module in (utils, dataset):
        module.load_dataset_cache_file = load
        module.save_dataset_cache_file = save
