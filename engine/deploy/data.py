"""Images for deployment checks: the check batch, calibration images and the validation set.

Calibration uses N training images drawn deterministically (the loader's seeded order,
without augmentation); accuracy uses the validation split. Batches are normalised the way
the model was trained (the mean/std recorded in its ONNX metadata), whatever the data's own
statistics are.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import DeployError, PresetError, SlimlabError

PRESET_SUFFIXES = (".yaml", ".yml")


@dataclass
class Images:
    """A dataset as deployment sees it: loaders plus where it came from."""

    bundle: Any  # engine.data.DataBundle
    label: str  # e.g. "shapes (from runs/demo/spec.yaml)"
    mean: tuple[float, ...]  # the normalisation the model expects
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        b = self.bundle
        return (b.in_channels, b.image_size, b.image_size)

    def val(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return _Renormalized(self.bundle.val, self.bundle, self.mean, self.std)

    def check_batch(self, n: int = 32) -> torch.Tensor:
        """The first `n` validation images (fewer when the split is smaller)."""
        taken: list[torch.Tensor] = []
        count = 0
        for x, _ in self.val():
            taken.append(x)
            count += len(x)
            if count >= n:
                break
        if not taken:
            raise DeployError(f"{self.label}: the validation split is empty")
        return torch.cat(taken)[:n]

    def calibration(self, samples: int, batch: int = 32) -> list[np.ndarray]:
        """`samples` training images in the loader's seeded order, unaugmented, as float32 batches."""
        if samples < 1:
            raise DeployError(f"samples {samples}: calibration needs at least one image")
        loader = _without_augmentation(self.bundle.train)
        got: list[np.ndarray] = []
        count = 0
        for x, _ in _Renormalized(loader, self.bundle, self.mean, self.std):
            got.append(x.numpy())
            count += len(x)
            if count >= samples:
                break
        if not got:
            raise DeployError(f"calibration data missing: {self.label} has no training images")
        flat = np.concatenate(got)[:samples]
        return [np.ascontiguousarray(flat[i : i + batch]) for i in range(0, len(flat), batch)]

    def check_fits(self, input_shape: Sequence[int | None], model_label: str, num_classes: int | None = None) -> None:
        """DeployError when the images' channels or size (or class count) do not fit the model."""
        want = tuple(input_shape)
        have = self.shape
        if len(want) == 3 and want[0] is not None and want[0] != have[0]:
            raise DeployError(
                f"{model_label} takes {want[0]}-channel images but {self.label} has {have[0]} channels; "
                "use the data the model was trained on"
            )
        if len(want) == 3 and all(isinstance(d, int) for d in want[1:]) and tuple(want[1:]) != have[1:]:
            raise DeployError(
                f"{model_label} takes {want[1]}x{want[2]} images but {self.label} gives "
                f"{have[1]}x{have[2]}; set the data's image_size to {want[1]} (data.image_size) or export "
                f"the model for {have[0]}x{have[1]}x{have[2]} (--input-size)"
            )
        if num_classes is not None and num_classes != self.bundle.num_classes:
            raise DeployError(
                f"{model_label} predicts {num_classes} classes but {self.label} has {self.bundle.num_classes}; "
                "calibration and accuracy need the data the model was trained on"
            )


class _Renormalized:
    """Batches of `loader` re-normalised from the data's mean/std to the model's."""

    def __init__(self, loader: Iterable, bundle: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        self.loader = loader
        c = len(bundle.mean)
        same = np.allclose(bundle.mean, mean, atol=1e-6) and np.allclose(bundle.std, std, atol=1e-6)
        self.scale = self.shift = None
        if not same:
            from_m, from_s = torch.tensor(bundle.mean).view(1, c, 1, 1), torch.tensor(bundle.std).view(1, c, 1, 1)
            to_m, to_s = torch.tensor(mean).view(1, c, 1, 1), torch.tensor(std).view(1, c, 1, 1)
            # (x * from_s + from_m - to_m) / to_s as one multiply-add
            self.scale = (from_s / to_s).float()
            self.shift = ((from_m - to_m) / to_s).float()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            if self.scale is not None:
                x = x * self.scale + self.shift
            yield x, y


def _without_augmentation(loader: Any) -> Any:
    """A shallow copy of the training loader with augmentation off (order and seed unchanged)."""
    clone = copy.copy(loader)
    if hasattr(clone, "augment"):
        clone.augment = False if isinstance(clone.augment, bool) else type(clone.augment)()
    if hasattr(clone, "set_epoch"):
        clone.set_epoch(0)
    return clone


# ---------------------------------------------------------------- finding the data


def from_spec(data_spec: Any, label: str, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              seed: int = 0, batch_size: int = 64) -> Images:
    """Build a DataSpec's loaders; `mean`/`std` default to the data's own."""
    from engine import data

    try:
        bundle = data.build(data_spec, batch_size=batch_size, seed=seed)
    except SlimlabError as e:
        raise DeployError(f"{label}: {e}") from None
    if mean is not None and len(mean) != bundle.in_channels:
        mean = std = None  # recorded for other data; the channel check reports the mismatch
    return Images(bundle, label, tuple(mean or bundle.mean), tuple(std or bundle.std))


def resolve(source: str | Path | None, *, recorded: dict | None, image_size: int | None,
            what: str = "calibration data") -> tuple[Any, str]:
    """(DataSpec, label) for `--calib PRESET_OR_DATA`, or for the data recorded in the model's metadata.

    A preset file or built-in preset name gives its `data`; a folder is read as CIFAR batches when
    it holds them, else as an image folder resized to the model's `image_size`.
    """
    from engine import config, presets

    if source is None or str(source) == "":
        spec = (recorded or {}).get("data") if isinstance(recorded, dict) else None
        if not spec:
            raise DeployError(
                f"{what} missing: the model records no dataset; give one with --calib PRESET_OR_DATA "
                "(a preset file, a built-in preset name such as demo, or a data folder)"
            )
        try:
            data_spec = config.DataSpec.model_validate(spec)
        except Exception as e:
            raise DeployError(f"{what}: the dataset recorded in the model is not valid ({e}); give --calib") from None
        _exists(data_spec, "the dataset recorded in the model", what)
        return data_spec, f"{data_spec.dataset} (recorded in the model)"
    path = Path(source)
    if path.is_dir():
        return _folder_spec(path, image_size), str(path)
    if path.is_file() and path.suffix in PRESET_SUFFIXES or (not path.exists() and presets.builtin(str(source))):
        try:
            spec = config.load_preset(path if path.exists() else str(source))
        except PresetError as e:
            raise DeployError(f"{what}: {e}") from None
        _exists(spec.data, f"preset {source}", what)
        return spec.data, f"{spec.data.dataset} (from preset {source})"
    if path.exists():
        raise DeployError(f"{what}: {path} is neither a preset (.yaml) nor a data folder")
    raise DeployError(
        f"{what} missing: {source} does not exist; give a preset file, a built-in preset name "
        f"({', '.join(presets.names())}) or a data folder"
    )


def _exists(data_spec: Any, where: str, what: str) -> None:
    if data_spec.dataset != "shapes" and data_spec.path is not None and not Path(data_spec.path).exists():
        raise DeployError(f"{what} missing: {where} reads {data_spec.dataset} from {data_spec.path}, which does not exist")


def _folder_spec(path: Path, image_size: int | None) -> Any:
    from engine import config

    if (path / "data_batch_1").exists() or (path / "cifar-10-batches-py").exists():
        return config.DataSpec(dataset="cifar10", path=path)
    if (path / "cifar-100-python").exists() or ((path / "train").is_file() and (path / "meta").is_file()):
        return config.DataSpec(dataset="cifar100", path=path)
    return config.DataSpec(dataset="imagefolder", path=path, **({"image_size": image_size} if image_size else {}))
