"""The streaming image-folder loader against a bare PyTorch DataLoader + PIL and against the
in-memory path, side by side.

Generates a folder of 20k JPEG and PNG files (10 classes, 72..128 px sides) in a temporary
directory, then reads the same training files at the same image size through
  streaming  engine.data with data.cache: none (decode in worker processes, compact file table)
  bare       a map-style Dataset doing PIL open -> RGB -> ImageOps.fit -> normalise, batched
             and shuffled by torch.utils.data.DataLoader
  in-memory  engine.data with data.cache: memory (every file decoded once into one uint8
             tensor when the data is built, then batches cut from it)
with the same worker count and batch size, in one process, at 0 workers and at --workers.
Rounds alternate the order (A B C, C B A, ...) so machine noise and warm-up hit all three;
figures are medians of images/s over whole epochs, plus the time to build each loader.
Then the peak RSS of building the data and reading one epoch (the main process and its
largest worker: the kernel's VmHWM), each in a fresh subprocess, at 5k and 20k
files, streamed and in memory: the growth column shows whether memory follows the data.

Usage: python benchmarks/loader_throughput.py [--files 20000] [--workers 2] [--rounds 4]
Last line: `loader_throughput_ratio: X` (streaming images/s / bare images/s at --workers;
>= 0.95 is the target).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
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


def throughput(root: Path, workers: int, rounds: int) -> dict:
    """Median images/s of the three loaders over whole epochs, and the time to build ours."""
    t0 = time.perf_counter()
    bundle = data.build(spec(root, workers, "none"), batch_size=BATCH, seed=0)
    stream_build = time.perf_counter() - t0
    stream = bundle.train
    t0 = time.perf_counter()
    memory = data.build(spec(root, workers, "memory"), batch_size=BATCH, seed=0).train
    memory_build = time.perf_counter() - t0
    paths = [stream.files[i] for i in range(len(stream.files))]
    bare_ds = Bare(paths, stream.labels, bundle.mean, bundle.std)
    bare = DataLoader(bare_ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
                      **({"prefetch_factor": 2} if workers else {}))
    loaders = {"streaming": stream, "bare": bare, "memory": memory}
    # Warm-up: start the worker processes and the page cache for all.
    for loader in loaders.values():
        for i, _ in enumerate(loader):
            if i == 3:
                break
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    order = list(loaders)
    for r in range(rounds):
        stream.set_epoch(r)
        memory.set_epoch(r)
        for name in order if r % 2 == 0 else order[::-1]:
            rates[name].append(one_pass(loaders[name]))
    out = {name: statistics.median(v) for name, v in rates.items()}
    return {**out, "images": len(paths), "stream_build_s": stream_build, "memory_build_s": memory_build}


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
    """Prints {"main_mib", "worker_mib"}: the kernel's peak RSS (VmHWM) of this process and of
    its largest worker over building the data and reading one epoch. The workers are read while
    they still run (persistent workers): getrusage's RUSAGE_CHILDREN would report the largest
    process this one ever waited for, not the loader's workers."""
    torch.set_num_threads(1)
    bundle = data.build(spec(Path(root), workers, cache), batch_size=BATCH, seed=0)
    n = sum(len(y) for _, y in bundle.train)
    worker = max((_peak_kib(child.pid) for child in psutil.Process().children(recursive=True)), default=0)
    main = _peak_kib(os.getpid())
    del bundle
    gc.collect()
    print(json.dumps({"images": n, "main_mib": round(main / 1024, 1), "worker_mib": round(worker / 1024, 1)}))


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:  # the process ended meanwhile
        pass
    return 0


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
            print(f"\nimages/s over one training epoch, median of {args.rounds} rounds; build: seconds to "
                  "build the loader (in-memory: decode every file once)")
            print(f"{'workers':>7}  {'images':>6}  {'streaming':>9}  {'bare':>6}  {'ratio':>5}  "
                  f"{'in-memory':>9}  {'stream/mem':>10}  {'stream build':>12}  {'memory build':>12}")
        speed = {}
        for workers in [] if args.memory_only else sorted({0, args.workers}):
            t = throughput(big, workers, args.rounds)
            ratio = t["streaming"] / t["bare"]
            speed[workers] = t["streaming"]
            print(f"{workers:>7}  {t['images']:>6}  {t['streaming']:>9.0f}  {t['bare']:>6.0f}  {ratio:>5.2f}  "
                  f"{t['memory']:>9.0f}  {t['streaming'] / t['memory']:>10.2f}  "
                  f"{t['stream_build_s']:>11.1f}s  {t['memory_build_s']:>11.1f}s")
        if len(speed) == 2:
            print(f"streaming, {args.workers} workers vs 0: {speed[args.workers] / speed[0]:.2f}x images/s")

        print(f"\npeak RSS (MiB) while building the data and reading one epoch, {args.workers} workers; "
              f"growth: {args.files} files / {args.files // 4} files")
        small_n, big_n = args.files // 4, args.files
        print(f"{'cache':>6}  {'main ' + str(small_n):>11}  {'main ' + str(big_n):>11}  {'growth':>6}  "
              f"{'worker ' + str(small_n):>12}  {'worker ' + str(big_n):>12}")
        for cache in ("none", "memory"):
            a, b = (peak_memory(root, args.workers, cache) for root in (small, big))
            worker = [f"{r['worker_mib']:.0f}" if r["worker_mib"] else "-" for r in (a, b)]
            print(f"{cache:>6}  {a['main_mib']:>11.0f}  {b['main_mib']:>11.0f}  "
                  f"{b['main_mib'] / a['main_mib']:>5.2f}x  {worker[0]:>12}  {worker[1]:>12}")
    if not args.memory_only:
        print(f"loader_throughput_ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
