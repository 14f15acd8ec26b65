"""Cost of the sparsity penalty: a training step with SparsePenalty vs a plain step.

Same model (resnet_cifar depth 56, width 1), same batch (64 x 3 x 32 x 32), SGD with momentum,
CPU. Plain and penalised steps alternate so drifts in machine load hit both alike; the figure is
the median over pairs of (penalised step / adjacent plain step). The penalty itself (foreach sign + add over all BatchNorm gammas) is also
timed alone.

Usage: python benchmarks/sparse_overhead.py [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
from torch import nn

import engine.models as models
from engine.slim import SparsePenalty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.build("resnet_cifar", 10, depth=56, width=1.0).train()
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = SimpleNamespace(model=model, epoch=0, epochs=10, step=0, device=torch.device("cpu"))
    penalty = SparsePenalty(s=1e-4)
    penalty.on_fit_start(trainer)

    def step(with_penalty: bool) -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        if with_penalty:
            penalty.after_backward(trainer)
        opt.step()
        return time.perf_counter() - t

    for _ in range(2):  # warm-up
        step(False)
        step(True)
    plain, sparse = [], []
    for i in range(args.repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        for flag in order:
            (sparse if flag else plain).append(step(flag))

    alone = []
    for _ in range(200):
        t = time.perf_counter()
        penalty.after_backward(trainer)
        alone.append(time.perf_counter() - t)

    p, s = statistics.median(plain), statistics.median(sparse)
    paired = statistics.median(b / a for a, b in zip(plain, sparse, strict=True))
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), batch {args.batch}")
    print(
        f"resnet_cifar-56: {len(penalty.weights)} BatchNorm gammas, {sum(w.numel() for w in penalty.weights)} channels"
    )
    print(f"plain step   median {p * 1e3:8.2f} ms  ({args.repeats} steps)")
    print(f"sparse step  median {s * 1e3:8.2f} ms  ({args.repeats} steps)")
    print(f"penalty alone median {statistics.median(alone) * 1e6:7.1f} us")
    print(f"ratio of medians {s / p:.3f}")
    print(f"penalty alone / plain step {statistics.median(alone) / p:.5f}")
    print(f"sparse_step_ratio: {paired:.3f}")


if __name__ == "__main__":
    main()
