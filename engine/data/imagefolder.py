"""`imagefolder`: one folder per class, kept in memory or streamed from disk.

Layouts: `<path>/train/<class>/...` with optional `<path>/val/<class>/...` and
`<path>/test/<class>/...`, or just `<path>/<class>/...`; without a val (test) folder
a stratified `val_fraction` (`test_fraction`) of the training images is held out.
Every image is converted to RGB, resized on its shorter side and centre-cropped to
`image_size` (engine.data.decode). `scan` finds the files without decoding any;
the registry then decodes them all into memory (`decode_all`) or streams them
(engine.data.stream), as `data.cache` decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data import decode
from engine.data.files import FileTable
from engine.data.splits import no_test_fraction, split_indices
from engine.data.stats import mean_std_of
from engine.errors import DataError

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
STATS_SAMPLE = 1024  # training images the mean/std are measured on (all when fewer)
STATS_CHUNK = 256


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path, root: Path) -> list[str]:
    """Image files under `folder` (recursively), as paths relative to `root`, sorted."""
    found = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        rel = os.path.relpath(here, root)
        found += [os.path.join(rel, f) for f in files if os.path.splitext(f)[1].lower() in EXTENSIONS]
    return sorted(found, key=lambda p: p.split(os.sep))


def _scan(folder: Path, root: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    files: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        found = _images_in(folder / name, root)
        if not found:
            empty.append(name)
        files += found
        labels += [label] * len(found)
    if empty:
        raise DataError(
            f"imagefolder: no images in {', '.join(str(folder / e) for e in empty)}; "
            f"every class folder needs at least one of {', '.join(sorted(EXTENSIONS))}"
        )
    return files, labels


@dataclass
class FolderSplits:
    """The image files of each split (paths and labels), before any decoding."""

    root: Path
    classes: list[str]
    files: dict[str, FileTable]  # "train", "val", and "test" when there is a test split
    labels: dict[str, np.ndarray]

    def count(self) -> int:
        return sum(len(f) for f in self.files.values())


def _same_classes(train_dir: Path, other: Path, classes: list[str], what: str) -> None:
    other_classes = _class_dirs(other)
    if other_classes != classes:
        only_train = sorted(set(classes) - set(other_classes))
        only_other = sorted(set(other_classes) - set(classes))
        raise DataError(
            f"imagefolder: class folders differ between {train_dir} and {other} "
            f"(only in train: {only_train or '-'}; only in {what}: {only_other or '-'}); "
            f"make both hold the same class names"
        )


def scan(path: Path | None, *, val_fraction: float, test_fraction: float, seed: int) -> FolderSplits:
    """Find the class folders and image files of every split; nothing is decoded here.

    `<path>/train` with optional `val/` and `test/` beside it, or `<path>/<class>/...`.
    A missing val (test) folder is replaced by a class-stratified `val_fraction`
    (`test_fraction`) of the training images, chosen by `seed`.
    """
    if path is None:
        raise DataError(
            "imagefolder needs data.path: a folder of <class>/ image folders "
            "(or train/ with optional val/ and test/)"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"imagefolder: {root} is not a directory; set data.path to the dataset folder"
        )
    train_dir = root / "train" if (root / "train").is_dir() else root
    nested = train_dir != root
    val_dir = root / "val" if nested and (root / "val").is_dir() else None
    test_dir = root / "test" if nested and (root / "test").is_dir() else None

    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(
            f"imagefolder: no class folders in {train_dir}; expected {train_dir}/<class>/<image files>"
        )
    if len(classes) < 2:
        raise DataError(
            f"imagefolder: {train_dir} has one class folder ({classes[0]}); a classifier needs two or more"
        )
    if test_dir is not None:
        no_test_fraction(test_fraction, "imagefolder", f"the folder {test_dir}")
    for folder, what in ((val_dir, "val"), (test_dir, "test")):
        if folder is not None:
            _same_classes(train_dir, folder, classes, what)

    pool_files, pool_labels = _scan(train_dir, root, classes)
    pool = FileTable(str(root), pool_files)
    del pool_files
    labels = np.asarray(pool_labels, dtype=np.int64)
    train_idx, val_idx, test_idx = split_indices(
        labels,
        val_fraction=0.0 if val_dir is not None else val_fraction,
        test_fraction=0.0 if test_dir is not None else test_fraction,
        seed=seed,
        class_names=classes,
        source=f"imagefolder {train_dir}",
    )
    files = {"train": pool.take(train_idx)}
    out_labels = {"train": labels[train_idx]}
    for name, folder, idx in (("val", val_dir, val_idx), ("test", test_dir, test_idx)):
        if folder is not None:
            f, y = _scan(folder, root, classes)
            files[name], out_labels[name] = FileTable(str(root), f), np.asarray(y, dtype=np.int64)
        elif name == "val" or test_fraction > 0:
            files[name], out_labels[name] = pool.take(idx), labels[idx]
    if len(files["val"]) == 0:
        raise DataError(
            f"imagefolder: val_fraction={val_fraction} holds out no images of {root}; "
            "raise data.val_fraction or add a val/ folder next to train/"
        )
    return FolderSplits(root, classes, files, out_labels)


def typical_short_side(files: FileTable, probes: int = 16) -> int:
    """Median shorter side of up to `probes` files spread over the table (headers only)."""
    from PIL import Image

    sides = []
    for i in np.unique(np.linspace(0, len(files) - 1, num=min(probes, len(files))).astype(np.int64)):
        try:
            with Image.open(files[int(i)]) as img:
                sides.append(min(img.size))
        except (OSError, ValueError):
            continue  # an unreadable file is reported when it is decoded
    return int(np.median(sides)) if sides else 0


def _decode_many(files: FileTable, indices: np.ndarray, size: int, workers: int) -> torch.Tensor:
    out = np.empty((len(indices), 3, size, size), dtype=np.uint8)
    paths = [files[int(i)] for i in indices]
    if workers > 1:
        # Pillow releases the GIL while decoding, so threads give real parallelism here.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for k, arr in enumerate(pool.map(lambda p: decode.image(p, size), paths)):
                out[k] = arr
    else:
        for k, p in enumerate(paths):
            out[k] = decode.image(p, size)
    return torch.from_numpy(out)


def decode_all(files: FileTable, size: int, workers: int) -> torch.Tensor:
    """Every file of a split as one uint8 (N, 3, size, size) tensor."""
    return _decode_many(files, np.arange(len(files)), size, workers)


def stats_sample(found: FolderSplits, seed: int) -> np.ndarray:
    """Sorted train indices the mean/std are measured on: all, or STATS_SAMPLE chosen by seed."""
    n = len(found.files["train"])
    if n <= STATS_SAMPLE:
        return np.arange(n)
    rng = np.random.default_rng([int(seed) % (1 << 64), 4])
    return np.sort(rng.choice(n, STATS_SAMPLE, replace=False))


def mean_std_in_memory(train: torch.Tensor, sample: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the sample of a decoded train split (the same chunks as `mean_std_from_files`)."""

    def chunks() -> Iterator[torch.Tensor]:
        for start in range(0, len(sample), STATS_CHUNK):
            yield train[torch.from_numpy(sample[start : start + STATS_CHUNK])]

    return mean_std_of(chunks())


def mean_std_from_files(
    files: FileTable, sample: np.ndarray, size: int, workers: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the sample decoded chunk by chunk: at most STATS_CHUNK images held at once."""

    def chunks() -> Iterator[torch.Tensor]:
        for start in range(0, len(sample), STATS_CHUNK):
            yield _decode_many(files, sample[start : start + STATS_CHUNK], size, workers)

    return mean_std_of(chunks())
