"""YOLO-format datasets: the Ultralytics dataset yaml, read and checked by slimlab before any run.

Layout: a yaml naming `train` and `val` (folders of images, or .txt lists of image paths), `names`
(a list or {id: name}) and optionally `path` (the root; default the yaml's folder, relative paths
resolved against it). Each image `.../images/.../x.jpg` has its labels in `.../labels/.../x.txt`,
one object per line: `class cx cy w h` normalised to [0, 1] (or `class x1 y1 x2 y2 ...`, a polygon,
whose box is used). An image without a label file, or with an empty one, is a background image.

Everything is checked here, so a bad dataset stops before training with the file and line at
fault; Ultralytics then gets the resolved dict and never runs its own dataset check (which would
download datasets and fonts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import DataError

IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}
MAX_LISTED = 5


@dataclass
class SplitInfo:
    sources: list[str]  # resolved folders or list files, as Ultralytics takes them
    images: int = 0
    labelled: int = 0  # images with a non-empty label file
    objects: int = 0
    background: int = 0  # images with no label file or an empty one


@dataclass
class YoloData:
    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, SplitInfo] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        return len(self.names)

    def ultralytics_dict(self) -> dict[str, Any]:
        """What Ultralytics' dataset check would have returned, without running it."""
        d: dict[str, Any] = {"path": str(self.root), "names": dict(enumerate(self.names)), "nc": self.nc,
                             "channels": 3, "yaml_file": str(self.yaml_path)}
        for split, info in self.splits.items():
            d[split] = info.sources[0] if len(info.sources) == 1 else list(info.sources)
        return d

    def describe(self) -> str:
        parts = [f"{s}: {i.images} images, {i.objects} objects, {i.background} background" for s, i in self.splits.items()]
        return f"{self.yaml_path}: {self.nc} classes ({', '.join(self.names[:8])}{', ...' if self.nc > 8 else ''}); " + "; ".join(parts)


def label_path(image: str | Path) -> Path:
    """Ultralytics' rule: the last /images/ folder of the path becomes /labels/, the suffix .txt."""
    return Path(_label_file(str(image)))


def _label_file(image: str) -> str:
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in image:
        head, _, tail = image.rpartition(sa)
        image = head + sb + tail
    return os.path.splitext(image)[0] + ".txt"


def _names(raw: dict, source: str) -> list[str]:
    names = raw.get("names")
    nc = raw.get("nc")
    if names is None:
        if isinstance(nc, int) and nc > 0:
            return [f"class{i}" for i in range(nc)]
        raise DataError(f"{source}: needs 'names' (a list of class names, or {{0: name, ...}})")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DataError(f"{source}: names: class ids must be 0..{len(keys) - 1} without gaps, got {keys[:10]}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{source}: names must be a non-empty list or {{id: name}} mapping")
    if nc is not None and nc != len(names):
        raise DataError(f"{source}: nc is {nc} but names lists {len(names)} classes")
    return [str(n) for n in names]


def _walk_images(folder: str) -> list[str]:
    """Image files under `folder` (recursively), as sorted path strings: plain os.scandir, because
    pathlib's per-path objects were most of the check's time on a set of 100k images."""
    out: list[str] = []
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=True):
                    stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                    out.append(e.path)
    out.sort()
    return out


def _images_of(source: Path, root: Path, key: str, yaml_path: Path) -> list[str]:
    if source.is_dir():
        images = _walk_images(str(source))
        if not images:
            raise DataError(f"{yaml_path}: {key}: folder {source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES)[:5])} ...)")
        return images
    if source.is_file() and source.suffix == ".txt":
        out = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                out.append(p if p.is_absolute() else (source.parent / p if (source.parent / p).exists() else root / p))
        missing = [p for p in out if not p.exists()]
        if missing:
            raise DataError(f"{yaml_path}: {key}: list {source} names {len(missing)} missing images (first: {missing[0]})")
        if not out:
            raise DataError(f"{yaml_path}: {key}: list {source} is empty")
        return [str(p) for p in out]
    raise DataError(f"{yaml_path}: {key}: {source} does not exist (a folder of images or a .txt list of image paths)")


class _Listing:
    """Which files exist, one directory listing per folder instead of a stat per label file."""

    def __init__(self) -> None:
        self.folders: dict[str, set[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        names = self.folders.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = {e.name for e in entries}
            except OSError:
                names = set()
            self.folders[folder] = names
        return name in names


def _check_labels(images: list[str], nc: int, key: str, yaml_path: Path) -> SplitInfo:
    """Read every label file of a split (never an image): counts, and every bad line named."""
    info = SplitInfo(sources=[])
    problems: list[str] = []
    found_any = False
    listing = _Listing()
    for image in images:
        info.images += 1
        lp = _label_file(image)
        if not listing.exists(lp):
            info.background += 1
            continue
        found_any = True
        with open(lp, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            info.background += 1
            continue
        info.labelled += 1
        for n, line in enumerate(lines, 1):
            problem = _check_line(line, nc)
            if problem:
                problems.append(f"{lp} line {n}: {problem}")
            else:
                info.objects += 1
        if len(problems) >= MAX_LISTED:
            break
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        raise DataError(f"{yaml_path}: {key}: bad label lines (fix or remove them):\n  {shown}")
    if not found_any:
        example = label_path(images[0])
        raise DataError(
            f"{yaml_path}: {key}: no label files found for its {len(images)} images: for {images[0]} "
            f"slimlab looked for {example} (YOLO layout: images/ and labels/ side by side)"
        )
    return info


def _check_line(line: str, nc: int) -> str | None:
    parts = line.split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return f"not numbers: {line.strip()[:60]!r}"
    if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
        return f"expected 'class cx cy w h' (or 'class x1 y1 x2 y2 ...'), got {len(values)} values"
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        return f"class {parts[0]} is outside 0..{nc - 1} ({nc} classes in names)"
    coords = values[1:]
    if any(not (-1e-6 <= v <= 1 + 1e-6) for v in coords):
        return f"coordinates must be normalised to [0, 1], got {' '.join(parts[1:])}"
    if len(coords) == 4 and (coords[2] <= 0 or coords[3] <= 0):
        return f"box width and height must be > 0, got {parts[3]} {parts[4]}"
    return None


def is_dataset_yaml(path: Path) -> bool:
    """True for an Ultralytics dataset yaml (train/val and names or nc), not a slimlab preset."""
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return (isinstance(raw, dict) and ("train" in raw or "val" in raw) and ("names" in raw or "nc" in raw)
            and not {"stages", "model", "task"} & set(raw))


def load(path: str | Path, splits: tuple[str, ...] = ("train", "val")) -> YoloData:
    """Read and check a YOLO dataset yaml (every label line of the named splits)."""
    yaml_path = Path(path)
    if not yaml_path.exists():
        raise DataError(f"{yaml_path}: no such dataset yaml")
    if yaml_path.is_dir():
        candidates = sorted(yaml_path.glob("*.yaml"))
        hint = f" (e.g. {candidates[0]})" if candidates else ""
        raise DataError(f"{yaml_path}: is a folder; data.path names the dataset yaml{hint}")
    try:
        raw = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{yaml_path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{yaml_path}: a dataset yaml is a mapping with train, val and names")
    names = _names(raw, str(yaml_path))
    # `path` relative to the yaml's folder (an absolute one stays as it is); without it, that folder
    root = (yaml_path.parent / raw["path"] if raw.get("path") else yaml_path.parent).resolve()
    if not root.is_dir():
        raise DataError(f"{yaml_path}: path: dataset root {root} does not exist")
    data = YoloData(yaml_path.resolve(), root, names)
    for key in splits:
        value = raw.get(key)
        if value is None:
            raise DataError(f"{yaml_path}: needs '{key}' (a folder of images relative to {root}, or a .txt list)")
        sources = [value] if isinstance(value, str) else value
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise DataError(f"{yaml_path}: {key} must be a path or a list of paths")
        resolved = [(root / s) if not Path(s).is_absolute() else Path(s) for s in sources]
        images = [img for src in resolved for img in _images_of(src, root, key, yaml_path)]
        info = _check_labels(images, len(names), key, yaml_path)
        info.sources = [str(p) for p in resolved]
        if key == "train" and info.objects == 0:
            raise DataError(f"{yaml_path}: train: every label file is empty: there are no objects to learn")
        data.splits[key] = info
    return data
