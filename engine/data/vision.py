"""`torchvision:<Name>`: a torchvision dataset already on disk, copied into memory.

Only usable where torchvision imports; its import fails on builds whose compiled
ops do not match torch, which is reported as a DataError with the alternatives.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from engine.data.splits import Splits, carve, no_test_fraction
from engine.errors import DataError

PREFIX = "torchvision:"


def _import_datasets() -> Any:
    try:
        import torchvision.datasets as datasets
    except (ImportError, OSError, RuntimeError) as exc:
        raise DataError(
            f"torchvision is unavailable here ({type(exc).__name__}: {exc}); "
            "install a torchvision build matching this torch, or use dataset cifar10/cifar100 "
            "(python batch files) or imagefolder (one folder per class) instead"
        ) from exc
    return datasets


def _to_uint8_nchw(data: Any) -> torch.Tensor:
    arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.dtype != np.uint8:
        raise DataError(
            f"torchvision dataset holds {arr.dtype} images; only uint8 images are supported"
        )
    if arr.ndim == 3:  # N, H, W greyscale (MNIST family)
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3):  # N, H, W, C (CIFAR family)
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"torchvision dataset images have shape {arr.shape}; expected N,H,W or N,H,W,C"
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def _materialise(ds: Any, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", None)
    if data is not None and targets is not None:
        return _to_uint8_nchw(data), torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    # Datasets without array attributes yield PIL images one by one.
    images, labels = [], []
    for img, label in ds:
        if not isinstance(img, Image.Image):
            raise DataError(
                f"torchvision dataset {type(ds).__name__} yields {type(img).__name__}, expected PIL images"
            )
        rgb = ImageOps.fit(img.convert("RGB"), (image_size, image_size), Image.Resampling.BILINEAR)
        images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
        labels.append(int(label))
    if not images:
        raise DataError(f"torchvision dataset {type(ds).__name__} is empty")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def load(
    dataset: str,
    path: Path | None,
    *,
    image_size: int,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
) -> Splits:
    """The dataset's `train=False` part is the test split; val is held out of `train=True`."""
    name = dataset[len(PREFIX) :]
    no_test_fraction(test_fraction, dataset, "its train=False part")
    datasets = _import_datasets()
    cls = getattr(datasets, name, None)
    if cls is None or not isinstance(cls, type):
        known = [n for n in dir(datasets) if n[:1].isupper()]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise DataError(f"torchvision has no dataset {name!r}{hint}")
    if path is None:
        raise DataError(f"{dataset} needs data.path: the root folder the dataset was downloaded to")
    root = str(Path(path).expanduser())
    try:
        train = cls(root=root, train=True, download=False)
        test = cls(root=root, train=False, download=False)
    except (RuntimeError, OSError, TypeError, ValueError) as exc:
        raise DataError(
            f"{dataset}: cannot open it under {root} ({exc}); download it there first "
            "(datasets with no train/test switch are not supported: use imagefolder)"
        ) from exc
    train_x, train_y = _materialise(train, image_size)
    test_x, test_y = _materialise(test, image_size)
    classes = [str(c) for c in getattr(train, "classes", [])]
    if not classes:
        classes = [str(i) for i in range(int(train_y.max()) + 1)]
    (tx, ty), (vx, vy), _ = carve(
        train_x, train_y, val_fraction=val_fraction, test_fraction=0.0, seed=seed,
        class_names=classes, source=dataset,
    )
    return Splits(tx, ty, vx, vy, classes, test_images=test_x, test_labels=test_y)
