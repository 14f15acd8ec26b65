"""Dataset names and how each becomes a DataBundle."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from engine.data.bundle import DataBundle
from engine.data.catalog import NAMES, TORCHVISION_PREFIX
from engine.data.loader import TensorLoader
from engine.data.stats import channel_mean_std
from engine.errors import DataError

if TYPE_CHECKING:
    from engine.config import DataSpec
    from engine.data.splits import Splits


def _unknown(name: str) -> DataError:
    choices = [*NAMES, TORCHVISION_PREFIX + "<Name>"]
    close = difflib.get_close_matches(name.lower(), NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return DataError(f"unknown dataset {name!r}{hint} (choose one of {', '.join(choices)})")


def load_splits(spec: DataSpec) -> Splits:
    """The dataset `spec` names, in memory, before batching."""
    name = spec.dataset
    if name == "shapes":
        from engine.data import shapes

        return shapes.load(
            num_classes=spec.num_classes,
            train_size=spec.train_size,
            val_size=spec.val_size,
            image_size=spec.image_size,
            seed=spec.seed,
            test_fraction=spec.test_fraction,
        )
    if name in ("cifar10", "cifar100"):
        from engine.data import cifar

        return cifar.load(
            name, spec.path, val_fraction=spec.val_fraction, seed=spec.seed,
            test_fraction=spec.test_fraction,
        )
    if name == "imagefolder":
        from engine.data import imagefolder

        return imagefolder.load(
            spec.path,
            image_size=spec.image_size,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
            workers=spec.workers,
            test_fraction=spec.test_fraction,
        )
    if name.startswith(TORCHVISION_PREFIX):
        from engine.data import vision

        return vision.load(
            name, spec.path, image_size=spec.image_size, val_fraction=spec.val_fraction,
            seed=spec.seed, test_fraction=spec.test_fraction,
        )
    raise _unknown(name)


def build(
    spec: DataSpec,
    *,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> DataBundle:
    s = load_splits(spec)
    if s.mean is not None and s.std is not None:
        mean, std = s.mean, s.std
    else:
        mean, std = channel_mean_std(s.train_images)
    common = {
        "batch_size": batch_size,
        "mean": mean,
        "std": std,
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
    }
    train = TensorLoader(
        s.train_images,
        s.train_labels,
        shuffle=True,
        augment=spec.augment,
        drop_last=drop_last,
        pad_shards=True,
        **common,
    )
    # Evaluation shards stay disjoint and unpadded so per-rank counts sum to exact figures.
    evaluation = {"shuffle": False, "augment": False, "drop_last": False, "pad_shards": False}
    val = TensorLoader(s.val_images, s.val_labels, **evaluation, **common)
    test = None
    if s.test_images is not None and s.test_labels is not None:
        test = TensorLoader(s.test_images, s.test_labels, **evaluation, **common)
    if len(train) == 0:
        raise DataError(
            f"{spec.dataset}: {train.num_samples} training images per rank make no full batch "
            f"of {batch_size}; lower training.batch_size or turn drop_last off"
        )
    return DataBundle(
        train=train,
        val=val,
        test=test,
        num_classes=len(s.class_names),
        in_channels=int(s.train_images.shape[1]),
        image_size=int(s.train_images.shape[-1]),
        class_names=s.class_names,
        mean=tuple(mean),
        std=tuple(std),
    )
