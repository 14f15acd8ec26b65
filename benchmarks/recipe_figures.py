"""Does slimming beat its controls on held-out real images? The recipe before and after, side by side.

Data (nothing downloaded):
- `photos`: colour photographs shipped inside installed packages (scikit-learn's sample images,
  matplotlib's sample data, Ultralytics' assets: at least two sources must be found). Each photo is
  resized to two cells on its short side and cut into cells of 192x192 pixels; a cell is a class
  (texture and colour of one image region, so capacity matters as classes grow). Every cell is 3x3 blocks of 64 pixels: five blocks give the
  training crops, two the val crops and two (the centre and a corner) the test crops, all 48x48,
  the blocks interleaved over the cell: no pixel of a test image was ever seen in training.
- `cifar`: the generated CIFAR-10-format batch files of benchmarks/cifar_like.py (32x32, its own
  test batch).

Each case (dataset, model, seed) is one slimlab run whose stages branch with `start:`:
baseline (train) -> sparse (`s: auto` towards the FLOPs target) -> prune at target_flops 0.5 ->
  finetune with the new default (rewind: the original schedule) | with KD from the unpruned model |
  the old default (lr 0.02 cosine, no rewind) | the old default with KD,
  and the controls at that architecture's FLOPs: scratch (the pruned architecture) and uniform
  (one width multiplier), each for as many epochs as train + sparse + finetune (epochs_rule epochs;
  the run's log also states the equal-FLOPs number);
-> prune percent 0.5 from the same sparse model -> finetune (rewind).
Figures are test accuracy (held out of every choice). A case is a win for a recipe when its best
slimming arm at no more FLOPs than the controls beats both controls on test accuracy.
Last line: `recipe_wins: N/M` (the new recipe).

    python benchmarks/recipe_figures.py [--datasets photos,cifar] [--models vgg,resnet_cifar]
        [--seeds 0,1] [--jobs 2] [--quick] [--site-packages DIR ...]
Minutes per case on two CPU cores; --quick is one small case (a smoke test of the whole thing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from cifar_like import write_cifar10  # noqa: E402

# (package, file inside it): colour photographs, by the package that ships them
PHOTOS = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("ultralytics", "assets/bus.jpg"),
    ("ultralytics", "assets/zidane.jpg"),
)
BLOCK = 64  # a class cell is 3x3 blocks of BLOCK pixels (after the photo is resized)
CROP = 48
# the blocks of a cell each split crops from: interleaved, so val and test sample the whole cell, and
# disjoint, so no test pixel was seen in training
SPLIT_BLOCKS = {"train": (0, 1, 3, 5, 7), "val": (2, 6), "test": (4, 8)}
MODELS = {"vgg": {"depth": 11, "width": 0.25}, "resnet_cifar": {"depth": 14, "width": 0.5}}


def find_photos(extra_dirs: list[Path]) -> list[tuple[str, Path]]:
    """(package, path) of the photos found in this interpreter's packages or under `extra_dirs`."""
    found = []
    for package, rel in PHOTOS:
        roots = []
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots += [Path(p) for p in spec.submodule_search_locations]
        roots += [Path(d) / package for d in extra_dirs]
        path = next((r / rel for r in roots if (r / rel).exists()), None)
        if path is not None:
            found.append((package, path))
    return found


def write_photo_folder(root: Path, photos: list[tuple[str, Path]], classes: int, per_class: tuple[int, int, int],
                       seed: int = 0) -> Path:
    """train/ val/ test/ image folders of CROPxCROP crops, one class per photo cell (see module docstring)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    cells: list[tuple[str, np.ndarray]] = []
    cell = 3 * BLOCK
    for package, path in photos:
        img = Image.open(path).convert("RGB")
        scale = 2 * cell / min(img.size)  # two rows (or columns) of cells on the short side
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
        a = np.asarray(img)
        for r in range(a.shape[0] // cell):
            for c in range(a.shape[1] // cell):
                cells.append((f"{package}_{path.stem}_r{r}c{c}", a[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]))
    if len(cells) < classes:
        raise SystemExit(f"only {len(cells)} photo cells for {classes} classes; ask for fewer (--classes)")
    # spread the classes over the photos: every k-th cell
    chosen = [cells[i] for i in np.linspace(0, len(cells) - 1, classes).round().astype(int)]
    for name, pixels in chosen:
        blocks = [pixels[(b // 3) * BLOCK:(b // 3 + 1) * BLOCK, (b % 3) * BLOCK:(b % 3 + 1) * BLOCK] for b in range(9)]
        for split, n in zip(("train", "val", "test"), per_class, strict=True):
            out = root / split / name
            out.mkdir(parents=True, exist_ok=True)
            where = SPLIT_BLOCKS[split]
            for i in range(n):
                block = blocks[where[i % len(where)]]
                y, x = rng.integers(0, BLOCK - CROP + 1, 2)
                Image.fromarray(np.ascontiguousarray(block[y:y + CROP, x:x + CROP])).save(out / f"{i:04d}.png")
    return root


def data_spec(name: str, root: Path, args: argparse.Namespace) -> dict:
    if name == "photos":
        folder = root / "photos"
        if not folder.exists():
            photos = find_photos(args.site_packages)
            sources = sorted({p for p, _ in photos})
            if len(sources) < 2:
                raise SystemExit(f"photos from at least two packages are needed; found {sources or 'none'} "
                                 "(run with the detect environment, or pass --site-packages DIR)")
            print(f"photos: {', '.join(f'{p}:{path.name}' for p, path in photos)}", flush=True)
            write_photo_folder(folder, photos, args.classes, tuple(args.per_class))
        return {"dataset": "imagefolder", "path": str(folder), "image_size": CROP}
    folder = root / "cifar"
    if not folder.exists():
        write_cifar10(folder, per_batch=args.cifar_per_batch, test=args.cifar_test)
    return {"dataset": "cifar10", "path": str(folder)}


def case_preset(arch: str, data: dict, seed: int, e: dict) -> dict:
    old = {"epochs": e["finetune"], "lr": 0.02, "warmup_epochs": 0}  # the old presets' finetune
    kd = {"T": 2.0, "w_kd": 0.5, "w_ce": 0.5}
    return {
        "name": f"{arch}-s{seed}",
        "model": {"arch": arch, "kwargs": MODELS[arch]},
        "data": {**data, "seed": seed, "workers": 0},
        "training": {"epochs": e["train"], "batch_size": 64, "lr": 0.05, "warmup_epochs": 0.5,
                     "schedule": "cosine", "seed": seed, "device": "cpu", "threads": 1, "log_every": 50},
        "stages": [
            {"type": "train"},
            {"type": "sparse", "s": "auto", "training": {"epochs": e["sparse"]}},
            {"type": "prune", "name": "prune-flops", "target_flops": 0.5, "round_to": 2},
            {"type": "finetune", "name": "old", "training": old},
            {"type": "finetune", "name": "old-kd", "start": "prune-flops", "teacher": "original", "kd": kd,
             "training": old},
            {"type": "finetune", "name": "rewind", "start": "prune-flops", "rewind": True,
             "training": {"epochs": e["finetune"]}},
            {"type": "finetune", "name": "rewind-kd", "start": "prune-flops", "rewind": True, "teacher": "original",
             "kd": kd, "training": {"epochs": e["finetune"]}},
            {"type": "scratch", "start": "rewind"},
            {"type": "uniform", "start": "rewind"},
            {"type": "prune", "name": "prune-50", "start": "sparse", "percent": 0.5, "round_to": 2},
            {"type": "finetune", "name": "rewind-50", "rewind": True, "training": {"epochs": e["finetune"]}},
        ],
    }


def run_case(job: tuple) -> dict:
    arch, dataset, seed, root, args = job
    from engine.cli import prepare_run_dir
    from engine.config import spec_from_dict
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    epochs = {"train": args.train_epochs, "sparse": args.sparse_epochs, "finetune": args.finetune_epochs}
    spec = spec_from_dict(case_preset(arch, data_spec(dataset, Path(root), args), seed, epochs))
    path = create_run_dir(Path(root) / "runs", f"{dataset}-{arch}-s{seed}")
    prepare_run_dir(path, spec)
    t0 = time.time()
    Pipeline(spec, path).run()
    summary = json.loads((path / "summary.json").read_text())
    return {"case": f"{dataset}/{arch}/s{seed}", "summary": summary, "minutes": (time.time() - t0) / 60,
            "path": str(path)}


ARMS_OLD = ("old", "old-kd")
ARMS_NEW = ("rewind", "rewind-kd", "rewind-50")
CONTROLS = ("scratch", "uniform")


def best_arm(summary: dict, arms: tuple[str, ...]) -> str:
    """The arm with the best test accuracy among those with no more FLOPs than the controls."""
    ceiling = 1.01 * max(summary[c]["flops"] for c in CONTROLS)
    fair = [a for a in arms if summary[a]["flops"] <= ceiling]
    return max(fair, key=lambda a: summary[a]["test_accuracy"])


def table(results: list[dict]) -> list[str]:
    cols = ("case", "baseline", "old", "old-kd", "rewind", "rewind-kd", "rewind-50", "scratch", "uniform",
            "FLOPs removed (target / percent 0.5)", "uniform width", "old wins", "new wins")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in results:
        s = r["summary"]
        base = s["train"]["test_accuracy"]

        def cell(stage: str, s: dict = s, base: float = base) -> str:
            v = s[stage]["test_accuracy"]
            return f"{v:.2%} ({100 * (v - base):+.1f})" if stage != "train" else f"{v:.2%}"

        removed = 1 - s["rewind"]["flops"] / s["train"]["flops"]
        removed_50 = 1 - s["rewind-50"]["flops"] / s["train"]["flops"]
        lines.append(" | ".join([
            r["case"], cell("train"), *(cell(a) for a in ("old", "old-kd", "rewind", "rewind-kd", "rewind-50")),
            cell("scratch"), cell("uniform"), f"{removed:.1%} / {removed_50:.1%}",
            f"{s['uniform'].get('width', float('nan')):.3f}", verdict(s, ARMS_OLD), verdict(s, ARMS_NEW)]))
    return lines


def wins(summary: dict, arms: tuple[str, ...]) -> bool:
    best = summary[best_arm(summary, arms)]["test_accuracy"]
    return all(best > summary[c]["test_accuracy"] for c in CONTROLS)


def verdict(summary: dict, arms: tuple[str, ...]) -> str:
    arm = best_arm(summary, arms)
    if wins(summary, arms):
        return f"{arm} won"
    top = max(CONTROLS, key=lambda c: summary[c]["test_accuracy"])
    return f"{top} won"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="photos,cifar")
    ap.add_argument("--models", default="vgg,resnet_cifar")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--jobs", type=int, default=2, help="cases run side by side, one torch thread each")
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--per-class", type=int, nargs=3, default=[48, 16, 64], metavar=("TRAIN", "VAL", "TEST"))
    ap.add_argument("--cifar-per-batch", type=int, default=200, help="images per training batch file (5 files)")
    ap.add_argument("--cifar-test", type=int, default=500)
    ap.add_argument("--train-epochs", type=int, default=8)
    ap.add_argument("--sparse-epochs", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--site-packages", type=Path, nargs="*", default=[],
                    help="more site-packages folders to find the photos in")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data and runs here")
    ap.add_argument("--quick", action="store_true", help="one small case: photos, vgg, seed 0, 2 epochs per stage")
    ap.add_argument("--report", type=Path, default=None,
                    help="print the tables of the finished cases under this --keep folder, training nothing")
    args = ap.parse_args()
    if args.report is not None:
        report(finished(args.report))
        return
    if args.quick:
        args.datasets, args.models, args.seeds = "photos", "vgg", "0"
        args.classes, args.per_class = 8, [16, 8, 8]
        args.train_epochs = args.sparse_epochs = args.finetune_epochs = 2
    root = args.keep or Path(tempfile.mkdtemp(prefix="slimlab-recipe-"))
    root.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets.split(","):  # written once, before the cases share them
        data_spec(dataset, root, args)
    jobs = [(arch, dataset, int(seed), str(root), args) for dataset in args.datasets.split(",")
            for arch in args.models.split(",") for seed in args.seeds.split(",")]
    print(f"{len(jobs)} cases, epochs train {args.train_epochs} sparse {args.sparse_epochs} finetune "
          f"{args.finetune_epochs}; controls {args.train_epochs + args.sparse_epochs + args.finetune_epochs} "
          f"epochs (equal epochs); runs under {root}", flush=True)
    results = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for r in pool.map(run_case, jobs):
            print(f"{r['case']}: {r['minutes']:.1f} min ({r['path']})", flush=True)
            results.append(r)
    report(results)


def finished(root: Path) -> list[dict]:
    """The cases whose runs are done under `root`/runs (cases run by several invocations sharing --keep)."""
    out = []
    for path in sorted((root / "runs").iterdir()):
        status = json.loads((path / "status.json").read_text()) if (path / "status.json").exists() else {}
        if status.get("state") != "done":
            continue
        dataset, _, rest = path.name.partition("-")
        arch, _, seed = rest.rpartition("-")
        out.append({"case": f"{dataset}/{arch}/{seed}", "summary": json.loads((path / "summary.json").read_text()),
                    "path": str(path)})
    return out


def report(results: list[dict]) -> None:
    print("\ntest accuracy (Δ vs baseline in points); slimming arms at target_flops 0.5 except rewind-50 "
          "(percent 0.5); controls at rewind's FLOPs")
    print("\n".join(table(results)))
    old = sum(wins(r["summary"], ARMS_OLD) for r in results)
    new = sum(wins(r["summary"], ARMS_NEW) for r in results)
    close = sum(r["summary"][best_arm(r["summary"], ARMS_NEW)]["test_accuracy"]
                >= r["summary"]["train"]["test_accuracy"] - 0.01 for r in results)
    print(f"\nbefore (old finetune defaults): wins {old}/{len(results)}")
    print(f"after: best new arm within 1 point of the baseline in {close}/{len(results)}")
    print(f"recipe_wins: {new}/{len(results)}")


if __name__ == "__main__":
    main()
