"""`s: auto` without a hand-picked s: pruned-at-target accuracy per sparse epoch, vgg and resnet_cifar,
on the generated shapes data and on CIFAR-10-format files generated here (benchmarks/cifar_like.py).

Each case trains a model, then sparse-trains it (`s: auto`, or a fixed s given with --s, side by
side) towards the next prune stage's `percent`, prunes, finetunes, and trains the pruned
architecture from scratch for as many epochs (the control). It prints per sparse epoch: s, the val
accuracy and the pruned-at-target accuracy; then one table row per case: trained (unpruned),
pruned-at-target at the sparse output epoch, pruned without finetuning, finetuned, scratch.
An `s: auto` case reaches its goal when, at the sparse stage's output epoch, the pruned-at-target
accuracy is within 2 points of the unpruned accuracy of that epoch and of the model the stage
started from. Minutes per case on a CPU; run it alone (`nice`).
Last line: `auto_s_cases_within_2_points: k/n` (the `s: auto` cases).

    python benchmarks/auto_s_figures.py [--cases vgg:shapes,resnet_cifar:cifar] [--s auto,1e-3]
        [--train-epochs 6] [--sparse-epochs 5] [--finetune-epochs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cifar_like import write_cifar10  # noqa: E402

MODELS = {"vgg": {"depth": 11, "width": 0.25}, "resnet_cifar": {"depth": 20, "width": 0.5}}


def data_spec(name: str, root: Path) -> dict:
    if name == "shapes":
        return {"dataset": "shapes", "num_classes": 6, "train_size": 4000, "val_size": 1000}
    folder = root / "cifar"
    if not folder.exists():
        write_cifar10(folder, per_batch=1000, test=1000)
    return {"dataset": "cifar10", "path": str(folder)}


def run_case(arch: str, data: str, root: Path, s: str | float, train_epochs: int, sparse_epochs: int,
             finetune_epochs: int, percent: float) -> dict:
    from engine.cli import prepare_run_dir
    from engine.config import spec_from_dict
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    preset = {
        "name": f"{arch}-{data}-s{s}",
        "model": {"arch": arch, "kwargs": MODELS[arch]},
        "data": data_spec(data, root),
        "training": {"epochs": train_epochs, "batch_size": 128, "lr": 0.05, "warmup_epochs": 0.5,
                     "device": "cpu", "log_every": 50},
        "stages": [{"type": "train"},
                   {"type": "sparse", "s": s, "training": {"epochs": sparse_epochs}},
                   {"type": "prune", "percent": percent},
                   {"type": "finetune", "training": {"epochs": finetune_epochs, "lr": 0.02, "warmup_epochs": 0}},
                   {"type": "scratch"}],
    }
    spec = spec_from_dict(preset)
    path = create_run_dir(root / "runs", preset["name"])
    prepare_run_dir(path, spec)
    t0 = time.perf_counter()
    Pipeline(spec, path).run()
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r.get("stage") == "sparse" and "accuracy" in r]
    summary = json.loads((path / "summary.json").read_text())
    start = summary["train"]["accuracy"]
    chosen = epochs[summary["sparse"]["selected_epoch"] - 1]
    log = [line[9:] for line in (path / "log.txt").read_text().splitlines() if "s: auto" in line]
    return {"arch": arch, "data": data, "s": s, "start": start, "epochs": epochs, "chosen": chosen, "log": log,
            "prune": summary["prune"]["accuracy"], "finetune": summary["finetune"]["accuracy"],
            "scratch": summary["scratch"]["accuracy"], "scratch_epochs": summary["scratch"]["epochs"],
            "seconds": time.perf_counter() - t0}


def s_value(text: str) -> str | float:
    return text if text == "auto" else float(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="vgg:shapes,resnet_cifar:shapes,vgg:cifar,resnet_cifar:cifar")
    p.add_argument("--s", default="auto", help="comma-separated: auto and/or fixed values, e.g. auto,1e-3")
    p.add_argument("--train-epochs", type=int, default=6)
    p.add_argument("--sparse-epochs", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--percent", type=float, default=0.5)
    p.add_argument("--keep", type=Path, help="keep the runs (and generated data) in this folder")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    ok = n_auto = 0
    cases = [(*c.split(":"), s_value(s)) for c in args.cases.split(",") for s in args.s.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for arch, data, s in cases:
            r = run_case(arch, data, root, s, args.train_epochs, args.sparse_epochs, args.finetune_epochs,
                         args.percent)
            results.append(r)
            print(f"\n{arch} on {data}: trained {r['start']:.2%}; sparse s: {s}, target percent {args.percent}"
                  f" ({r['seconds']:.0f}s)")
            print(f"{'epoch':>5} {'s':>9} {'accuracy':>9} {'pruned@target':>14} {'gap':>6} {'gamma<1%init':>13}")
            for m in r["epochs"]:
                print(f"{m['epoch'] + 1:>5} {m['s']:>9.3g} {m['accuracy']:>9.2%} {m['acc_pruned_at_target']:>14.2%} "
                      f"{(m['accuracy'] - m['acc_pruned_at_target']) * 100:>6.2f} {m['gamma_rel_lt_1e-2']:>13.1%}")
            c = r["chosen"]
            gap = (c["accuracy"] - c["acc_pruned_at_target"]) * 100
            gap_start = (r["start"] - c["acc_pruned_at_target"]) * 100
            good = gap <= 2 and gap_start <= 2
            if s == "auto":
                n_auto += 1
                ok += good
            print(f"output epoch {c['epoch'] + 1}: pruned-at-target {c['acc_pruned_at_target']:.2%}, "
                  f"{gap:.2f} points below that epoch, {gap_start:.2f} below the trained model: "
                  f"{'within' if good else 'NOT within'} 2 points; prune stage {r['prune']:.2%}, "
                  f"finetune {r['finetune']:.2%}, scratch ({r['scratch_epochs']} epochs) {r['scratch']:.2%}")
            for line in r["log"]:
                print("  " + line)
    print(f"\n{'case':<22} {'s':>6} {'s per epoch':<34} {'trained':>8} {'pruned@tgt':>10} {'pruned':>8} "
          f"{'finetune':>8} {'scratch':>8}")
    for r in results:
        chosen = ",".join(f"{m['s']:.2g}" for m in r["epochs"])
        print(f"{r['arch'] + ':' + r['data']:<22} {r['s']!s:>6} {chosen:<34} {r['start']:>8.2%} "
              f"{r['chosen']['acc_pruned_at_target']:>10.2%} {r['prune']:>8.2%} {r['finetune']:>8.2%} {r['scratch']:>8.2%}")
    print(f"auto_s_cases_within_2_points: {ok}/{n_auto}")

if __name__ == "__main__":
    main()
