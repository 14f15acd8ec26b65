"""Does a 50% slimming plan make the model faster on CPU, and how does that compare to FLOPs?

Each model gets log-normal |gamma| (a spread like after sparse training, so the plan is not
uniform across layers), then a plan at percent 0.5 with round_to 1 and with round_to 8. The
original and both pruned models are timed interleaved (median of runs) at batch 1 and 32.

Usage: python benchmarks/pruned_latency.py [--threads N] [--runs N]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import numpy as np
import torch
from torch import nn

import engine.models as models
from engine.measure import count_flops, latency_ms
from engine.slim import apply_plan, plan_from_inputs, precompute

MODELS = [("vgg", {"depth": 19}), ("resnet_cifar", {"depth": 56}), ("mobilenetv2", {})]


def lognormal_gammas(model: nn.Module, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                g = rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32)
                m.weight.copy_(torch.from_numpy(g))


def timed(variants: dict[str, nn.Module], shape, batch: int, rounds: int, runs: int) -> dict:
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, model in variants.items():
            samples[name].append(latency_ms(model, shape, batch, warmup=2, runs=runs))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), percent 0.5")
    print(f"{'model':<16}{'variant':<9}{'FLOPs ratio':>12}{'lat b1':>10}{'lat b32':>10}")
    headline = None
    for arch, kwargs in MODELS:
        torch.manual_seed(0)
        model = models.build(arch, 10, **kwargs).eval()
        lognormal_gammas(model)
        shape = model.input_size
        inputs = precompute(model)
        variants = {"original": model}
        for r in (1, 8):
            plan = plan_from_inputs(inputs, percent=0.5, round_to=r)
            variants[f"r{r}"] = apply_plan(copy.deepcopy(model), plan)
        flops = {k: count_flops(m, shape) for k, m in variants.items()}
        b1 = timed(variants, shape, 1, args.rounds, args.runs)
        b32 = timed(variants, shape, 32, args.rounds, args.runs)
        label = arch + "".join(f"-{v}" for v in kwargs.values())
        print(
            f"{label:<16}{'original':<9}{'1.000':>12}{b1['original']:>8.2f}ms{b32['original']:>8.1f}ms"
        )
        for k in ("r1", "r8"):
            print(
                f"{'':<16}{k:<9}{flops[k] / flops['original']:>12.3f}"
                f"{b1[k] / b1['original']:>10.3f}{b32[k] / b32['original']:>10.3f}"
            )
        if arch == "vgg":
            headline = b32["r8"] / b32["original"]
    print("(pruned rows: ratios to the original; latency ratios at batch 1 and 32)")
    print(f"pruned_latency_ratio_r8: {headline:.3f}  (vgg, batch 32)")


if __name__ == "__main__":
    main()
