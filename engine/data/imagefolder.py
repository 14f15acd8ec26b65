"""`imagefolder`: one folder per class, decoded once into memory.

Layouts: `<path>/train/<class>/...` with an optional `<path>/val/<class>/...`, or
just `<path>/<class>/...`; without a val folder a stratified `val_fraction` of the
training images is held out. Every image is converted to RGB, resized on its
shorter side and centre-cropped to `image_size`, and kept as one uint8 tensor: for
simplicity and speed, at the price of memory, so the total decoded size is capped
at about 4 GiB.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.data.split import holdout
from engine.data.splits import Splits
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


def load(
    path: Path | None, *, image_size: int, val_fraction: float, seed: int, workers: int = 0
) -> Splits:
    if path is None:
        raise DataError(
            "imagefolder needs data.path: a folder of <class>/ image folders (or train/ and val/)"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"imagefolder: {root} is not a directory; set data.path to the dataset folder"
        )
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = root / "val" if train_dir != root and (root / "val").is_dir() else None

    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(
            f"imagefolder: no class folders in {train_dir}; expected {train_dir}/<class>/<image files>"
        )
    if len(classes) < 2:
        raise DataError(
            f"imagefolder: {train_dir} has one class folder ({classes[0]}); a classifier needs two or more"
        )
    if val_dir is not None:
        val_classes = _class_dirs(val_dir)
        if val_classes != classes:
            only_train = sorted(set(classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(classes))
            raise DataError(
                f"imagefolder: class folders differ between {train_dir} and {val_dir} "
                f"(only in train: {only_train or '-'}; only in val: {only_val or '-'}); "
                "make both hold the same class names"
            )

    train_files, train_labels = _scan(train_dir, classes)
    val_files, val_labels = _scan(val_dir, classes) if val_dir is not None else ([], [])
    decoded = (len(train_files) + len(val_files)) * 3 * image_size * image_size
    if decoded > MAX_DECODED_BYTES:
        raise DataError(
            f"imagefolder: {len(train_files) + len(val_files)} images at {image_size}x{image_size} "
            f"would take {decoded / 2**30:.1f} GiB in memory (limit 4 GiB); set a smaller data.image_size"
        )

    images = _decode_all(train_files + val_files, image_size, workers)
    labels = torch.tensor(train_labels + val_labels, dtype=torch.int64)
    n_train = len(train_files)
    if val_dir is not None:
        return Splits(
            images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], classes
        )

    train_idx, val_idx = holdout(np.asarray(train_labels), val_fraction, seed)
    if len(val_idx) == 0:
        raise DataError(
            f"imagefolder: val_fraction={val_fraction} holds out no images of {root}; "
            "raise data.val_fraction or add a val/ folder next to train/"
        )
    ti, vi = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return Splits(images[ti], labels[ti], images[vi], labels[vi], classes)
