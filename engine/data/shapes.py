"""The embedded `shapes` dataset: drawn geometric shapes, generated in memory from a seed.

Every image is one filled shape on a flat background with Gaussian noise. Position,
size, aspect, rotation, foreground and background colour are random; colours keep a
minimum contrast so every label is visible. Drawing is vectorised: each shape is an
inequality over rotated coordinate grids for a whole chunk of images at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.data.splits import Splits, carve
from engine.errors import DataError

# Order matters: `num_classes=k` uses the first k kinds.
KINDS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "ellipse",
    "star",
    "x",
    "frame",
)

# Kinds that turn into another kind when rotated far (square -> diamond, cross -> x,
# horizontal ellipse -> vertical) only get a small rotation jitter.
_FULL_TURN = {"circle", "triangle", "ring", "star"}
JITTER = 0.2  # radians

# Difficulty knobs. Radius is in half-image units (1.0 touches both edges).
RADIUS = (0.45, 0.75)
ASPECT = (0.85, 1.15)
NOISE_SIGMA = (0.02, 0.1)  # on the [0, 1] scale
MIN_LUMA_GAP = 0.4  # |luma(fg) - luma(bg)|, so the shape shows in every channel mix

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SQRT3 = float(np.sqrt(3.0))
_CHUNK = 1024

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    return rho <= 0.4 + 0.65 * np.abs(np.cos(2.5 * phi)) ** 3


def _x(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    c = np.float32(np.sqrt(0.5))
    return _plus(c * (u - v), c * (u + v))


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, centred on its centroid, enlarged to roughly match the others' area.
    u, v = u / 1.2, v / 1.2
    return (v >= -0.5) & (v <= 1.0 - _SQRT3 * np.abs(u))


_MASKS: dict[str, Mask] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,
    "triangle": _triangle,
    "cross": _plus,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.36),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.15,
    "ellipse": lambda u, v: u * u + (v / 0.45) ** 2 <= 1.0,
    "star": _star,
    "x": _x,
    "frame": lambda u, v: (
        (np.maximum(np.abs(u), np.abs(v)) <= 0.9) & (np.maximum(np.abs(u), np.abs(v)) >= 0.55)
    ),
}


def _colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB in [0, 1] whose luma differs by at least MIN_LUMA_GAP."""
    bg = rng.random((n, 3), dtype=np.float32)
    fg = rng.random((n, 3), dtype=np.float32)
    bad = np.abs((fg - bg) @ _LUMA) < MIN_LUMA_GAP
    # Redraw only the failing pairs; each round keeps most of them, so few rounds run.
    while bad.any():
        fg[bad] = rng.random((int(bad.sum()), 3), dtype=np.float32)
        bad = np.abs((fg - bg) @ _LUMA) < MIN_LUMA_GAP
    return bg, fg


def _draw(rng: np.random.Generator, kinds: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, 3, size, size) images of the shape kinds given by index."""
    n = kinds.shape[0]
    radius = rng.uniform(*RADIUS, n).astype(np.float32)
    aspect = rng.uniform(*ASPECT, n).astype(np.float32)
    centre = (rng.uniform(-1.0, 1.0, (n, 2)) * (1.0 - 0.8 * radius[:, None])).astype(np.float32)
    full = np.array([KINDS[k] in _FULL_TURN for k in kinds])
    angle = np.where(full, rng.uniform(-np.pi, np.pi, n), rng.uniform(-JITTER, JITTER, n)).astype(
        np.float32
    )
    bg, fg = _colours(rng, n)
    noise_sigma = rng.uniform(*NOISE_SIGMA, n).astype(np.float32)

    # Pixel centres on [-1, 1]; y grows downwards, harmless since every kind is mirror
    # symmetric about a horizontal axis or drawn at a random turn.
    axis = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    dx = axis[None, None, :] - centre[:, 0, None, None]
    dy = axis[None, :, None] - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy) / (radius * aspect)[:, None, None]
    v = (-sin * dx + cos * dy) / (radius / aspect)[:, None, None]

    mask = np.zeros((n, size, size), dtype=bool)
    for k in np.unique(kinds):
        sel = kinds == k
        mask[sel] = _MASKS[KINDS[k]](u[sel], v[sel])

    img = bg[:, :, None, None] + mask[:, None].astype(np.float32) * (fg - bg)[:, :, None, None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * noise_sigma[:, None, None, None]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate(
    n: int, *, num_classes: int, image_size: int, seed: int, stream: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (uint8 N,3,S,S) and labels (int64 N), balanced across classes.

    `stream` separates train (0) and val (1) draws made from the same seed.
    """
    if not 2 <= num_classes <= len(KINDS):
        raise ValueError(f"shapes has 2..{len(KINDS)} classes, got {num_classes}")
    rng = np.random.default_rng([int(seed) % (1 << 64), stream])
    labels = rng.permutation(np.arange(n) % num_classes)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop] = _draw(rng, labels[start:stop], image_size)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load(
    *,
    num_classes: int,
    train_size: int,
    val_size: int,
    image_size: int,
    seed: int,
    test_fraction: float = 0.0,
) -> Splits:
    """Train and val drawn from separate streams of the same seed, so they never share images.

    With `test_fraction` > 0 that fraction of the `train_size` images (per class) is
    held out as the test split, so train, val and test are disjoint.
    """
    if not 2 <= num_classes <= len(KINDS):
        raise DataError(
            f"shapes has {len(KINDS)} kinds ({', '.join(KINDS)}); "
            f"set data.num_classes between 2 and {len(KINDS)}, not {num_classes}"
        )
    if train_size < 1 or val_size < 1:
        raise DataError("shapes needs data.train_size and data.val_size of at least 1")
    if image_size < 8:
        raise DataError(f"shapes draws at data.image_size >= 8, not {image_size}")
    kw = {"num_classes": num_classes, "image_size": image_size, "seed": seed}
    names = list(KINDS[:num_classes])
    tx, ty = generate(train_size, stream=0, **kw)
    vx, vy = generate(val_size, stream=1, **kw)
    if test_fraction <= 0:
        return Splits(tx, ty, vx, vy, names)
    (tx, ty), _, (sx, sy) = carve(
        tx, ty, val_fraction=0.0, test_fraction=test_fraction, seed=seed,
        class_names=names, source="shapes",
    )
    return Splits(tx, ty, vx, vy, names, test_images=sx, test_labels=sy)
