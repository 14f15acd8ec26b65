"""CIFAR-10 / CIFAR-100 from the python-pickle batch files as distributed.

The files are pickles (the dataset's own format). They are read with an unpickler
that only resolves the few numpy names an array needs, so a tampered file cannot
run code on load.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.splits import Splits, carve, no_test_fraction
from engine.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    folder: str  # the directory name inside the distributed archive
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any decoding failure means the file is not a CIFAR batch
        raise DataError(
            f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
            "re-extract the python version of the dataset archive"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict of CIFAR batch data")
    return obj


def _find_root(name: str, path: Path | None) -> Path:
    layout = LAYOUTS[name]
    if path is None:
        raise DataError(
            f"{name} needs data.path: the folder holding {layout.folder}/ "
            f"or the files {', '.join(layout.train_files)}, {layout.test_file}, {layout.meta_file}"
        )
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{name}: data.path {path} is not a directory; point it at the extracted {layout.folder}/"
        )
    # Accept both the batch folder itself and its parent (where the archive was extracted).
    if (path / layout.folder).is_dir() and not (path / layout.test_file).exists():
        path = path / layout.folder
    expected = [*layout.train_files, layout.test_file, layout.meta_file]
    missing = [f for f in expected if not (path / f).is_file()]
    if missing:
        raise DataError(
            f"{name}: missing {', '.join(missing)} in {path}; expected the files "
            f"{', '.join(expected)} there (or a {layout.folder}/ folder holding them)"
        )
    return path


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    obj = _read_pickle(path)
    if b"data" not in obj or layout.label_key not in obj:
        keys = ", ".join(repr(k) for k in obj)
        raise DataError(
            f"{path} lacks b'data' or {layout.label_key!r} (has {keys}); "
            "is this the right CIFAR variant for the dataset name?"
        )
    data = np.asarray(obj[b"data"])
    labels = np.asarray(obj[layout.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"{path}: labels must lie in 0..{layout.num_classes - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load(
    name: str, path: Path | None, *, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> Splits:
    """Read `cifar10` or `cifar100`: the test batch is the test split, and the val split
    (which selects epochs) is a class-stratified `val_fraction` of the training batches."""
    layout = LAYOUTS[name]
    no_test_fraction(test_fraction, name, f"the {layout.test_file} file")
    root = _find_root(name, path)
    parts = [_read_batch(root / f, layout) for f in layout.train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(root / layout.test_file, layout)
    meta = _read_pickle(root / layout.meta_file)
    raw_names = meta.get(layout.names_key)
    if raw_names is None or len(raw_names) != layout.num_classes:
        raise DataError(
            f"{root / layout.meta_file}: expected {layout.num_classes} class names "
            f"under {layout.names_key!r}"
        )
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw_names]
    (tx, ty), (vx, vy), _ = carve(
        torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(train_y),
        val_fraction=val_fraction, test_fraction=0.0, seed=seed,
        class_names=class_names, source=name,
    )
    return Splits(
        train_images=tx,
        train_labels=ty,
        val_images=vx,
        val_labels=vy,
        class_names=class_names,
        mean=layout.mean,
        std=layout.std,
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y),
    )
