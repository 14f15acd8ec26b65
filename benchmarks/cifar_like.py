"""CIFAR-10-format batch files with learnable content, generated locally (no download).

Ten classes of 32x32 textures: stripes at one of five orientations, at one of two spatial
frequencies, each image with its own phase, contrast, tint, background, Gaussian noise and an
occluding blob, so a CNN learns it but not in one step. The files follow the python-pickle
layout of cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta), which slimlab's
`cifar10` dataset reads.

    python benchmarks/cifar_like.py DIR [--per-batch 1000] [--test 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

ORIENTATIONS = 5
FREQUENCIES = (2.5, 6.0)  # stripe periods across the image
NAMES = [f"stripes_{o * 36}deg_{'wide' if f == FREQUENCIES[0] else 'narrow'}" for f in FREQUENCIES
         for o in range(ORIENTATIONS)]


def draw(rng: np.random.Generator, labels: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 (N, 3, size, size) images for `labels` in 0..9."""
    n = labels.size
    orient = (labels % ORIENTATIONS) * np.pi / ORIENTATIONS + rng.normal(0, 0.08, n)
    freq = np.where(labels < ORIENTATIONS, FREQUENCIES[0], FREQUENCIES[1]) * rng.uniform(0.85, 1.15, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    u = np.cos(orient)[:, None, None] * xx + np.sin(orient)[:, None, None] * yy
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    wave = np.sin(2 * np.pi * freq[:, None, None] * u + phase)
    contrast = rng.uniform(0.15, 0.45, n)[:, None, None, None]
    tint = rng.uniform(0.3, 1.0, (n, 3))[:, :, None, None]
    background = rng.uniform(0.25, 0.75, (n, 3))[:, :, None, None]
    img = background + contrast * tint * wave[:, None]
    # an occluding blob of flat colour at a random place
    cy, cx = rng.uniform(-0.4, 0.4, (2, n))
    radius = rng.uniform(0.08, 0.2, n)
    blob = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) < radius[:, None, None] ** 2
    img = np.where(blob[:, None], rng.uniform(0, 1, (n, 3))[:, :, None, None], img)
    img = img + rng.normal(0, 0.08, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _batch(rng: np.random.Generator, n: int, label: str) -> dict:
    labels = rng.permutation(np.arange(n) % 10)
    data = draw(rng, labels).reshape(n, -1)
    return {b"batch_label": label.encode(), b"labels": labels.tolist(), b"data": data,
            b"filenames": [f"{label}_{i}.png".encode() for i in range(n)]}


def write_cifar10(root: Path, per_batch: int = 1000, test: int = 1000, seed: int = 0) -> Path:
    """Write cifar-10-batches-py/ under `root`; returns that folder."""
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        (out / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(rng, per_batch, f"training batch {i} of 5"), protocol=2))
    (out / "test_batch").write_bytes(pickle.dumps(_batch(rng, test, "testing batch 1 of 1"), protocol=2))
    meta = {b"label_names": [n.encode() for n in NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--per-batch", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"wrote {write_cifar10(args.root, args.per_batch, args.test, args.seed)}")


if __name__ == "__main__":
    main()
