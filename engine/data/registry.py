"""Dataset names and how each becomes a DataBundle.

Importing this module stays cheap (the names are read when a preset is validated); torch and the
dataset modules load inside the functions that build data. `spec` is a preset's data section
(engine.config.DataSpec), read by attribute.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from engine.data.bundle import DataBundle
from engine.data.resources import choose_cache, resolve_workers
from engine.errors import DataError

if TYPE_CHECKING:
    from engine.data.imagefolder import FolderSplits
    from engine.data.splits import Splits

NAMES: tuple[str, ...] = ("shapes", "imagefolder", "cifar10", "cifar100")
TORCHVISION_PREFIX = "torchvision:"


def _unknown(name: str) -> DataError:
    choices = [*NAMES, TORCHVISION_PREFIX + "<Name>"]
    close = difflib.get_close_matches(name.lower(), NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return DataError(f"unknown dataset {name!r}{hint} (choose one of {', '.join(choices)})")


def load_splits(spec: Any, workers: int = 0) -> Splits:
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
        return _folder_in_memory(_scan_folder(spec), spec, workers)
    if name.startswith(TORCHVISION_PREFIX):
        from engine.data import vision

        return vision.load(
            name, spec.path, image_size=spec.image_size, val_fraction=spec.val_fraction,
            seed=spec.seed, test_fraction=spec.test_fraction,
        )
    raise _unknown(name)


def _folder_in_memory(found: FolderSplits, spec: Any, workers: int) -> Splits:
    import torch

    from engine.data import imagefolder
    from engine.data.splits import Splits

    parts = {k: imagefolder.decode_all(f, spec.image_size, workers) for k, f in found.files.items()}
    labels = {k: torch.from_numpy(v) for k, v in found.labels.items()}
    train = parts["train"]
    mean, std = imagefolder.mean_std_in_memory(train, imagefolder.stats_sample(found, spec.seed))
    return Splits(
        train, labels["train"], parts["val"], labels["val"], found.classes, mean=mean, std=std,
        test_images=parts.get("test"), test_labels=labels.get("test"),
    )


def _scan_folder(spec: Any) -> FolderSplits:
    from engine.data import imagefolder

    return imagefolder.scan(
        spec.path, val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, seed=spec.seed
    )


def build(
    spec: Any,
    *,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    device: Any = None,
) -> DataBundle:
    """The loaders of `spec`'s dataset; see engine.data.build."""
    notes: list[str] = []
    workers, note = resolve_workers(spec.workers, world_size)
    notes += [note] if note else []
    order = {"batch_size": batch_size, "seed": seed, "rank": rank, "world_size": world_size}
    if spec.dataset == "imagefolder":
        found = _scan_folder(spec)
        decoded = found.count() * 3 * spec.image_size**2
        cache, note = choose_cache(spec.cache, decoded, world_size, "imagefolder")
        if cache == "memory" and spec.cache == "auto":
            cache, note = _frame_from_files(spec, found)
        notes += [note] if note else []
        if cache == "none":
            pin = device is not None and torch_device_type(device) == "cuda"
            bundle = _streaming(spec, found, order, workers, pin, drop_last)
            bundle.notes = notes + bundle.notes
            return _checked(bundle, spec, batch_size)
        s = _folder_in_memory(found, spec, workers)
    else:
        if spec.cache == "none":
            notes.append(
                f"data.cache: none streams image files; {spec.dataset} is read whole, "
                "so it stays in memory"
            )
        s = load_splits(spec, workers)
    bundle = _in_memory(s, spec, order, drop_last)
    bundle.notes = notes
    return _checked(bundle, spec, batch_size)


def _frame_from_files(spec: Any, found: FolderSplits) -> tuple[str, str | None]:
    """data.cache: auto streams when random_resized_crop would otherwise cut from cached
    copies much smaller than the files (a 0.08 crop of a 224 px copy is a blurred 63 px)."""
    from engine.data import augment_spec, imagefolder

    ops = augment_spec.ops_of(spec.augment)
    if not ops or ops[0][0] not in augment_spec.FRAMING:
        return "memory", None
    side = imagefolder.typical_short_side(found.files["train"])
    if side < 2 * spec.image_size:
        return "memory", None
    return "none", (
        f"imagefolder: {ops[0][0]} cuts from the full-resolution files (typically {side} px on the "
        f"shorter side, image_size {spec.image_size}), so they are streamed; data.cache: memory "
        f"crops from cached {spec.image_size} px copies instead"
    )


def torch_device_type(device: Any) -> str:
    """'cuda' for torch.device('cuda:1') or the string 'cuda:1'."""
    return str(getattr(device, "type", device)).split(":")[0]


def _checked(bundle: DataBundle, spec: Any, batch_size: int) -> DataBundle:
    if len(bundle.train) == 0:
        raise DataError(
            f"{spec.dataset}: {bundle.train.num_samples} training images per rank make no full batch "
            f"of {batch_size}; lower training.batch_size or turn drop_last off"
        )
    return bundle


def _in_memory(s: Splits, spec: Any, order: dict, drop_last: bool) -> DataBundle:
    from engine.data.loader import TensorLoader

    if s.mean is not None and s.std is not None:
        mean, std = s.mean, s.std
    else:
        from engine.data.stats import channel_mean_std

        mean, std = channel_mean_std(s.train_images)
    common = {"mean": mean, "std": std, **order}
    train = TensorLoader(
        s.train_images, s.train_labels, shuffle=True, augment=spec.augment, drop_last=drop_last,
        pad_shards=True, **common,
    )
    # Evaluation shards stay disjoint and unpadded so per-rank counts sum to exact figures.
    evaluation = {"shuffle": False, "augment": False, "drop_last": False, "pad_shards": False}
    val = TensorLoader(s.val_images, s.val_labels, **evaluation, **common)
    test = None
    if s.test_images is not None and s.test_labels is not None:
        test = TensorLoader(s.test_images, s.test_labels, **evaluation, **common)
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


def _streaming(
    spec: Any, found: FolderSplits, order: dict, workers: int, pin: bool, drop_last: bool
) -> DataBundle:
    from engine.data import imagefolder
    from engine.data.stream import StreamLoader

    size = spec.image_size
    sample = imagefolder.stats_sample(found, spec.seed)
    mean, std = imagefolder.mean_std_from_files(found.files["train"], sample, size, workers)
    common = {"image_size": size, "mean": mean, "std": std, "workers": workers, "pin_memory": pin, **order}
    train = StreamLoader(
        found.files["train"], found.labels["train"], shuffle=True, augment=spec.augment,
        drop_last=drop_last, pad_shards=True, **common,
    )
    evaluation = {"shuffle": False, "augment": False, "drop_last": False, "pad_shards": False}
    val = StreamLoader(found.files["val"], found.labels["val"], **evaluation, **common)
    test = None
    if "test" in found.files:
        # Read once at the end: its workers need not outlive a pass.
        test = StreamLoader(found.files["test"], found.labels["test"], persistent=False, **evaluation, **common)
    n = found.count()
    note = (
        f"imagefolder: streaming {n} images from {found.root} at {size}x{size} "
        f"with {workers} worker process{'es' if workers != 1 else ''}"
        + (" (decoding in the training process: set data.workers)" if workers == 0 else "")
    )
    return DataBundle(
        train=train, val=val, test=test, num_classes=len(found.classes), in_channels=3,
        image_size=size, class_names=found.classes, mean=tuple(mean), std=tuple(std), notes=[note],
    )
