"""`imagefolder`: one folder per class, decoded once into memory.

Layouts: `<path>/train/<class>/...` with optional `<path>/val/<class>/...` and
`<path>/test/<class>/...`, or just `<path>/<class>/...`; without a val (test) folder
a stratified `val_fraction` (`test_fraction`) of the training images is held out.
Every image is converted to RGB, resized on its
shorter side and centre-cropped to `image_size`, and kept as one uint8 tensor: for
simplicity and speed, at the price of memory, so the total decoded size is capped
at about 4 GiB.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.data.split import split_indices
from engine.data.splits import Splits, no_test_fraction
from engine.errors import DataError

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
MAX_DECODED_BYTES = 4 << 30


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _scan(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        found = _images_in(folder / name)
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


def _decode(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"imagefolder: cannot decode {path} ({exc}); remove or replace the file"
        ) from exc


def _decode_all(files: list[Path], size: int, workers: int) -> torch.Tensor:
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    if workers > 0:
        # Pillow releases the GIL while decoding, so threads give real parallelism here.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, arr in enumerate(pool.map(lambda f: _decode(f, size), files)):
                out[i] = arr
    else:
        for i, f in enumerate(files):
            out[i] = _decode(f, size)
    return torch.from_numpy(out)


@dataclass
class FolderSplits:
    """The image files of each split (paths and labels), before any decoding."""

    root: Path
    classes: list[str]
    files: dict[str, list[Path]]  # "train", "val", and "test" when there is a test split
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

    pool_files, pool_labels = _scan(train_dir, classes)
    labels = np.asarray(pool_labels, dtype=np.int64)
    train_idx, val_idx, test_idx = split_indices(
        labels,
        val_fraction=0.0 if val_dir is not None else val_fraction,
        test_fraction=0.0 if test_dir is not None else test_fraction,
        seed=seed,
        class_names=classes,
        source=f"imagefolder {train_dir}",
    )
    files = {"train": [pool_files[i] for i in train_idx]}
    out_labels = {"train": labels[train_idx]}
    for name, folder, idx in (("val", val_dir, val_idx), ("test", test_dir, test_idx)):
        if folder is not None:
            f, y = _scan(folder, classes)
            files[name], out_labels[name] = f, np.asarray(y, dtype=np.int64)
        elif name == "val" or test_fraction > 0:
            files[name], out_labels[name] = [pool_files[i] for i in idx], labels[idx]
    if not files["val"]:
        raise DataError(
            f"imagefolder: val_fraction={val_fraction} holds out no images of {root}; "
            "raise data.val_fraction or add a val/ folder next to train/"
        )
    return FolderSplits(root, classes, files, out_labels)


def load(
    path: Path | None,
    *,
    image_size: int,
    val_fraction: float,
    seed: int,
    workers: int = 0,
    test_fraction: float = 0.0,
) -> Splits:
    """Every split decoded into memory (see `scan` for the layouts)."""
    found = scan(path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    decoded = found.count() * 3 * image_size * image_size
    if decoded > MAX_DECODED_BYTES:
        raise DataError(
            f"imagefolder: {found.count()} images at {image_size}x{image_size} "
            f"would take {decoded / 2**30:.1f} GiB in memory (limit 4 GiB); set a smaller data.image_size"
        )
    parts = {
        name: (_decode_all(files, image_size, workers), torch.from_numpy(found.labels[name]))
        for name, files in found.files.items()
    }
    test = parts.get("test")
    return Splits(
        *parts["train"],
        *parts["val"],
        found.classes,
        test_images=test[0] if test else None,
        test_labels=test[1] if test else None,
    )
