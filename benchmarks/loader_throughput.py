"""The streaming image-folder loader against a bare PyTorch DataLoader + PIL, side by side.

Generates a folder of 20k JPEG and PNG files (10 classes, 72..128 px sides) in a temporary
directory, then reads the same training files at the same image size through
  streaming  engine.data with data.cache: none (decode in worker processes, compact file table)
  bare       a map-style Dataset doing PIL open -> RGB -> ImageOps.fit -> normalise, batched
             and shuffled by torch.utils.data.DataLoader
with the same worker count and batch size, in one process. Rounds alternate the order
(A B, B A, ...) so machine noise and warm-up hit both; figures are medians of images/s.
Then the peak RSS of building the data and reading one epoch (the main process and its
largest worker, as the kernel records them), each in a fresh subprocess, streaming at 5k
and 20k files, next to the in-memory cache at both sizes.

Usage: python benchmarks/loader_throughput.py [--files 20000] [--workers 2] [--rounds 4]
Last line: `loader_throughput_ratio: X` (streaming images/s / bare images/s; >= 0.95 is the target).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import data  # noqa: E402
from engine.config import DataSpec  # noqa: E402

CLASSES = 10
IMAGE_SIZE = 64
BATCH = 128


def generate(root: Path, files: int, seed: int = 0) -> None:
    """Smooth random pictures (a coarse colour grid blown up, plus noise): half JPEG, half PNG."""
    rng = np.random.default_rng(seed)
    for i in range(files):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(72, 129, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        arr = np.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
        arr = np.clip(arr + rng.integers(-12, 13, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:06d}{'.jpg' if i % 2 else '.png'}", quality=90)


def subset(src: Path, dst: Path, per_class: int) -> None:
    """A smaller dataset of links to the first `per_class` files of every class."""
    for folder in sorted(src.iterdir()):
        (dst / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir())[:per_class]:
            (dst / folder.name / f.name).symlink_to(f)


class Bare(Dataset):
    """What a PyTorch user writes by hand: one PIL image per __getitem__."""

    def __init__(self, paths: list[str], labels: np.ndarray, mean, std) -> None:
        self.paths, self.labels = paths, labels
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as img:
            img = ImageOps.fit(img.convert("RGB"), (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, int(self.labels[i])


def spec(root: Path, workers: int, cache: str = "none") -> DataSpec:
    return DataSpec(dataset="imagefolder", path=root, image_size=IMAGE_SIZE, augment=False,
                    workers=workers, cache=cache)


def one_pass(loader) -> float:
    """Images per second over one full pass (workers already started)."""
    t0 = time.perf_counter()
    n = 0
    for _, y in loader:
        n += len(y)
    return n / (time.perf_counter() - t0)


def throughput(root: Path, workers: int, rounds: int) -> tuple[float, float, int]:
    bundle = data.build(spec(root, workers), batch_size=BATCH, seed=0)
    stream = bundle.train
    paths = [stream.files[i] for i in range(len(stream.files))]
    bare_ds = Bare(paths, stream.labels, bundle.mean, bundle.std)
    bare = DataLoader(bare_ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
                      **({"prefetch_factor": 2} if workers else {}))
    # Warm-up: start the worker processes and the page cache for both.
    for loader in (stream, bare):
        for i, _ in enumerate(loader):
            if i == 3:
                break
    ours, theirs = [], []
    for r in range(rounds):
        stream.set_epoch(r)
        pair = [(ours, stream), (theirs, bare)]
        for out, loader in pair if r % 2 == 0 else pair[::-1]:
            out.append(one_pass(loader))
    return statistics.median(ours), statistics.median(theirs), len(paths)


def peak_memory(root: Path, workers: int, cache: str) -> dict:
    """Peak RSS in MiB of building the data and reading one epoch, in a fresh process."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.loader_throughput import epoch_in_this_process as run;"
        "run(sys.argv[2], int(sys.argv[3]), sys.argv[4])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parents[1]), str(root), str(workers), cache],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def epoch_in_this_process(root: str, workers: int, cache: str) -> None:
    """Prints {"main_mib", "worker_mib"}: the kernel's peak RSS of this process and of its
    largest worker (getrusage, so no sampling), over building the data and reading one epoch."""
    torch.set_num_threads(1)
    bundle = data.build(spec(Path(root), workers, cache), batch_size=BATCH, seed=0)
    n = sum(len(y) for _, y in bundle.train)
    del bundle
    gc.collect()  # the workers stop and are waited for, so their peak counts in RUSAGE_CHILDREN
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"images": n, "main_mib": round(main, 1), "worker_mib": round(worker, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="slimlab-loader-") as tmp:
        big = Path(tmp) / "big"
        t0 = time.perf_counter()
        generate(big, args.files)
        small = Path(tmp) / "small"
        subset(big, small, args.files // CLASSES // 4)
        print(f"generated {args.files} files ({IMAGE_SIZE}px output, batch {BATCH}) in {time.perf_counter() - t0:.0f}s")

        ratio = 0.0
        if not args.memory_only:
            print(f"{'workers':>7}  {'images':>6}  {'streaming img/s':>15}  {'bare img/s':>10}  {'ratio':>5}")
        for workers in [] if args.memory_only else sorted({0, args.workers}):
            ours, theirs, n = throughput(big, workers, args.rounds)
            ratio = ours / theirs
            print(f"{workers:>7}  {n:>6}  {ours:>15.0f}  {theirs:>10.0f}  {ratio:>5.2f}")

        print(f"\npeak RSS (MiB) while building the data and reading one epoch, {args.workers} workers")
        print(f"{'cache':>6}  {'files':>6}  {'main':>6}  {'largest worker':>14}")
        for cache in ("none", "memory"):
            for root, files in ((small, args.files // 4), (big, args.files)):
                rss = peak_memory(root, args.workers, cache)
                print(f"{cache:>6}  {files:>6}  {rss['main_mib']:>6.0f}  {rss['worker_mib']:>14.0f}")
    if not args.memory_only:
        print(f"loader_throughput_ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
