"""Cost of the sparsity penalty inside Ultralytics' DetectionTrainer: penalised vs plain training steps.

One real training run (slimlab's DetectionTrainer subclass, YOLOv8n at 1/4 width, generated YOLO
shapes at 64 px, batch 64 so that every batch is an optimizer step) in which the penalty is switched
on for every other batch. A batch is timed from on_train_batch_start to on_train_batch_end:
forward, Ultralytics' loss, backward, unscale, the penalty (when on), clipping, optimizer step, EMA.
The figure is median(penalised batch) / median(plain batch); both kinds interleave in one process,
so machine load hits them alike. Needs the detection environment (make setup-detect).

Usage: .venv-detect/bin/python benchmarks/detect/sparse_overhead.py [--epochs N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.config import TrainingSpec
    from engine.detect import data as ydata
    from engine.detect.model import build
    from engine.detect.synth import write_dataset
    from engine.detect.trainer import Session, make_trainer, trainer_args
    from engine.runs import RunWriter
    from engine.slim.sparse import SparsePenalty
    from engine.train import NullReporter, StopFlag

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = ydata.load(write_dataset(tmp / "data", train=args.images, val=32, seed=0))
        model = build("ultralytics:yolov8n.yaml", data.nc, imgsz=64, names=data.names)
        (tmp / "run" / "weights").mkdir(parents=True)
        cfg = TrainingSpec(epochs=args.epochs, batch_size=64, lr=0.01, warmup_epochs=0, device="cpu")
        penalty = SparsePenalty(s=1e-3)
        session = Session(stage="sparse", writer=RunWriter(tmp / "run"), arch={}, plan=None, meta={}, stop=StopFlag(),
                          reporter=NullReporter(), log_every=10_000, penalty=penalty)
        session.save_last = session.save_best = lambda *a, **k: None  # time training, not checkpoint writes
        targs = trainer_args(cfg, data=data, imgsz=64, device=torch.device("cpu"), save_dir=tmp / "u" / "s",
                             stage="sparse", augment=False, workers=0)
        trainer = make_trainer(model, data, targs, session)
        times: dict[bool, list[float]] = {True: [], False: []}
        state = {"t0": 0.0, "n": 0, "on": False, "first": True}

        def epoch_start(tr) -> None:
            state["first"] = True  # an epoch's first batch also starts the loader: not timed

        def start(tr) -> None:
            state["on"] = state["n"] % 2 == 1
            session.penalty = penalty if state["on"] else None
            state["t0"] = time.perf_counter()

        def end(tr) -> None:
            if state["first"]:
                state["first"] = False
                return
            times[state["on"]].append(time.perf_counter() - state["t0"])
            state["n"] += 1

        trainer.add_callback("on_train_epoch_start", epoch_start)
        trainer.add_callback("on_train_batch_start", start)
        trainer.callbacks["on_train_batch_end"].insert(0, end)
        trainer.validate = lambda: ({}, 0.0)  # validation is not a training step
        from engine.detect.model import quiet

        with quiet():
            trainer.train()
    plain, penalised = statistics.median(times[False]), statistics.median(times[True])
    print(f"batches: {len(times[False])} plain, {len(times[True])} penalised (batch 64, 64 px, yolov8n 1/4 width; each epoch's first batch not timed)")
    print(f"median plain step     {plain * 1e3:8.1f} ms")
    print(f"median penalised step {penalised * 1e3:8.1f} ms")
    print(f"detect_sparse_step_overhead: {penalised / plain:.4f}")


if __name__ == "__main__":
    main()
