"""The engine's training loop against a bare hand-written PyTorch loop, side by side in one run.

Both train the same model on the same batches for one epoch and evaluate once; the engine
also writes metrics lines, status.json and checkpoints, as it does in a real run. Rounds
alternate the order (A B, B A, ...) so machine noise and warm-up hit both; the ratio uses medians.
Last line: `trainer_throughput_ratio: X` (bare time / engine time; 1.0 = no overhead).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import checkpoint, data  # noqa: E402
from engine.config import DataSpec, TrainingSpec  # noqa: E402
from engine.runs import RunWriter, create_run_dir  # noqa: E402
from engine.train import Trainer, evaluate  # noqa: E402

ARCH = checkpoint.arch_dict("vgg", 6, 3, {"depth": 11, "width": 0.5})
CFG = TrainingSpec(epochs=1, batch_size=128, lr=0.05, device="cpu", log_every=10)
ROUNDS = 6


def bare(bundle) -> float:
    torch.manual_seed(0)
    model = checkpoint.build_model(ARCH)
    opt = torch.optim.SGD(
        model.parameters(), lr=CFG.lr, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    t0 = time.perf_counter()
    model.train()
    bundle.train.set_epoch(0)
    for x, y in bundle.train:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    evaluate(model, bundle.val, torch.device("cpu"))
    return time.perf_counter() - t0


def engine(bundle, root: Path) -> float:
    torch.manual_seed(0)
    model = checkpoint.build_model(ARCH)
    writer = RunWriter(create_run_dir(root, "bench"))
    trainer = Trainer(
        model, bundle, CFG, stage="train", writer=writer, arch=ARCH, device=torch.device("cpu")
    )
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bundle = data.build(DataSpec(train_size=3072, val_size=512), batch_size=CFG.batch_size, seed=0)
    bare(bundle)  # warm-up: allocator, kernels
    a, b = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            if i % 2 == 0:
                a.append(bare(bundle))
                b.append(engine(bundle, Path(tmp)))
            else:
                b.append(engine(bundle, Path(tmp)))
                a.append(bare(bundle))
    ta, tb = statistics.median(a), statistics.median(b)
    n = len(bundle.train.dataset) if hasattr(bundle.train, "dataset") else 3072
    print(f"bare loop:   {ta:.2f} s/epoch (median of {ROUNDS}) ~{n / ta:.0f} img/s")
    print(f"engine loop: {tb:.2f} s/epoch (median of {ROUNDS}) ~{n / tb:.0f} img/s")
    print(f"trainer_throughput_ratio: {ta / tb:.3f}")


if __name__ == "__main__":
    main()
