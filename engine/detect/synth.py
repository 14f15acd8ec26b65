"""A generated detection dataset written in YOLO format: several shapes per image, with their boxes.

For tests and the detection demo (no download). Every image has its own size (64-160 px a side
by default), a flat background with noise, and 1-4 filled shapes whose boxes overlap little.
A label line is `class cx cy w h`, normalised to the image, the box being the tight bounding box
of the drawn pixels. The same seed writes the same bytes. The folder appears complete or not at
all: it is written beside its destination and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.errors import DataError

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond")
SPLITS = ("train", "val")

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]

_MASKS: dict[str, Mask] = {  # u, v in [-1, 1] over the object's box
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.ones_like(u, dtype=bool),
    "triangle": lambda u, v: np.abs(u) <= (v + 1.0) / 2.0,
    "cross": lambda u, v: (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3),
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.4),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
}

_LUMA = np.array([0.299, 0.587, 0.114])
MIN_LUMA_GAP = 0.35


def _contrasting(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    while True:
        fg = rng.random(3)
        if abs(float((fg - bg) @ _LUMA)) >= MIN_LUMA_GAP:
            return fg


def _iou(a: Sequence[int], b: Sequence[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def draw_image(
    rng: np.random.Generator, kinds: Sequence[str], size_range: tuple[int, int], objects: tuple[int, int]
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One uint8 HxWx3 image and its label rows (class, cx, cy, w, h normalised)."""
    h, w = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
    bg = rng.random(3)
    img = np.broadcast_to(bg, (h, w, 3)).copy()
    rows: list[tuple[int, float, float, float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    n = int(rng.integers(objects[0], objects[1] + 1))
    side = min(h, w)
    for _ in range(n * 10):  # rejection sampling: a few tries per object for a free place
        if len(boxes) == n:
            break
        bw = int(rng.integers(max(8, side // 6), max(9, side // 2)))
        bh = int(np.clip(bw * rng.uniform(0.75, 1.33), 8, side - 1))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        box = (x0, y0, x0 + bw, y0 + bh)
        if any(_iou(box, b) > 0.1 for b in boxes):
            continue
        k = int(rng.integers(len(kinds)))
        ys = (np.arange(bh) + 0.5) * (2.0 / bh) - 1.0
        xs = (np.arange(bw) + 0.5) * (2.0 / bw) - 1.0
        mask = _MASKS[kinds[k]](xs[None, :], ys[:, None])
        mask = np.broadcast_to(mask, (bh, bw))
        rows_on, cols_on = np.nonzero(mask)
        if rows_on.size == 0:
            continue
        img[y0 : y0 + bh, x0 : x0 + bw][mask] = _contrasting(rng, bg)
        # the tight box of the drawn pixels, not the sampled one
        tx0, tx1 = x0 + cols_on.min(), x0 + cols_on.max() + 1
        ty0, ty1 = y0 + rows_on.min(), y0 + rows_on.max() + 1
        boxes.append(box)
        rows.append((k, (tx0 + tx1) / 2 / w, (ty0 + ty1) / 2 / h, (tx1 - tx0) / w, (ty1 - ty0) / h))
    img += rng.standard_normal(img.shape) * rng.uniform(0.01, 0.05)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), rows


def write_dataset(
    root: str | Path,
    *,
    train: int = 512,
    val: int = 128,
    classes: int = 3,
    seed: int = 0,
    size_range: tuple[int, int] = (64, 160),
    objects: tuple[int, int] = (1, 4),
    overwrite: bool = False,
) -> Path:
    """Write images/{train,val}, labels/{train,val} and data.yaml under `root`; returns data.yaml."""
    from PIL import Image

    if not 1 <= classes <= len(KINDS):
        raise DataError(f"the generated detection data has 1..{len(KINDS)} classes ({', '.join(KINDS)}), not {classes}")
    if not 16 <= size_range[0] <= size_range[1]:
        raise DataError(f"image sides {size_range} must be at least 16 px, smallest first")
    if not 1 <= objects[0] <= objects[1]:
        raise DataError(f"objects per image {objects} must be at least 1, fewest first")
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise DataError(f"{root} exists; choose another folder or remove it first")
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    kinds = KINDS[:classes]
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp makes it private; the dataset is an ordinary folder
    try:
        for stream, (split, count) in enumerate(zip(SPLITS, (train, val), strict=True)):
            rng = np.random.default_rng([int(seed), stream])
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(count):
                img, rows = draw_image(rng, kinds, size_range, objects)
                Image.fromarray(img).save(tmp / "images" / split / f"{i:05d}.png", optimize=False)
                text = "".join(f"{k} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n" for k, cx, cy, bw, bh in rows)
                (tmp / "labels" / split / f"{i:05d}.txt").write_text(text)
        names = "".join(f"  {i}: {k}\n" for i, k in enumerate(kinds))
        (tmp / "data.yaml").write_text(
            f"# generated by slimlab (seed {seed}): {train} train / {val} val images\n"
            f"train: images/train\nval: images/val\nnc: {classes}\nnames:\n{names}"
        )
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "data.yaml"
