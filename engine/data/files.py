"""A compact table of file paths: one byte string and offsets, not a list of objects.

Image lists of millions of files stay a few bytes per file, and worker processes
read them without touching Python object refcounts (a list of str in a forked
worker is copied page by page as it is read, which grows every worker's memory
with the dataset).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np


class FileTable:
    def __init__(self, root: str, relative: Iterable[str]) -> None:
        encoded = [os.fsencode(r) for r in relative]
        self.root = os.fsencode(root)
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        self._ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends.shape[0])

    def __getitem__(self, i: int) -> str:
        end = int(self._ends[i])
        start = int(self._ends[i - 1]) if i > 0 else 0
        rel = self._blob[start:end].tobytes()
        return os.fsdecode(os.path.join(self.root, rel))

    def take(self, indices: Sequence[int] | np.ndarray) -> FileTable:
        """A table of the files at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        starts = self._ends - self._lengths()
        lengths = self._lengths()[idx]
        ends = np.cumsum(lengths, dtype=np.int64)
        # Every byte of the selected names: its source position is the file's start plus
        # its offset inside the name.
        shift = np.repeat(starts[idx] - (ends - lengths), lengths)
        out = FileTable.__new__(FileTable)
        out.root = self.root
        out._blob = self._blob[shift + np.arange(int(ends[-1]) if len(ends) else 0)]
        out._ends = ends
        return out

    def _lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    def nbytes(self) -> int:
        return int(self._blob.nbytes + self._ends.nbytes)
