"""What ships, timed where it runs: original fp32 vs pruned fp32 vs pruned INT8 through onnxruntime.

Each model gets log-normal |gamma| (a spread like after sparse training), a plan at percent 0.5
with round_to 8, and is exported to ONNX (checked against PyTorch) before and after pruning; the
pruned model is quantized to INT8 (QDQ, per-channel, calibrated on random inputs: this measures
speed, the demo run measures accuracy). All three are timed in one process, interleaved, with
fixed onnxruntime threads, at batch 1 and 32 (median over rounds of the best of 3 back-to-back runs).

Usage: python benchmarks/deploy_latency.py [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import engine.models as models
from engine.deploy import latency, onnxfile, runtime
from engine.deploy.export import export
from engine.deploy.quantize import QuantizeOptions, Quantizer
from engine.measure import count_flops, count_params
from engine.slim import apply_plan, plan_from_inputs, precompute

sys.path.insert(0, str(Path(__file__).parent))
from pruned_latency import lognormal_gammas  # noqa: E402

MODELS = [("vgg", {"depth": 19}), ("resnet_cifar", {"depth": 56}), ("mobilenetv2", {})]


def int8(proto, shape, samples: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((16, *shape)).astype(np.float32) for _ in range(samples // 16)]
    with tempfile.TemporaryDirectory() as tmp:
        q = Quantizer(proto, calib, QuantizeOptions(samples=samples, max_drop=None), Path(tmp))
        return q.quantize().read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.threads} intra-op thread(s), "
          f"percent 0.5, round_to 8, median of {args.repeats} interleaved rounds (best of 3 runs each)")
    head = f"{'model':<16}{'variant':<14}{'params':>11}{'FLOPs':>15}{'size MiB':>10}{'b1 ms':>9}{'b32 ms':>10}{'x b1':>7}{'x b32':>7}"
    print(head)
    headline = None
    for arch, kwargs in MODELS:
        torch.manual_seed(0)
        model = models.build(arch, 10, **kwargs).eval()
        lognormal_gammas(model)
        shape = tuple(model.input_size)
        pruned = apply_plan(copy.deepcopy(model), plan_from_inputs(precompute(model), percent=0.5, round_to=8))
        fp32 = export(model, shape).model
        small = export(pruned, shape).model
        files = {"original fp32": onnxfile.serialize(fp32), "pruned fp32": onnxfile.serialize(small),
                 "pruned int8": int8(small, shape)}
        figures = {"original fp32": model, "pruned fp32": pruned, "pruned int8": pruned}
        sessions = {k: runtime.session(v, args.threads) for k, v in files.items()}
        times = latency.measure(sessions, shape, repeats=args.repeats)
        base = times["original fp32"]
        label = arch + "".join(f"-{v}" for v in kwargs.values())
        for i, (name, t) in enumerate(times.items()):
            m = figures[name]
            print(f"{label if i == 0 else '':<16}{name:<14}{count_params(m):>11,}{count_flops(m, shape):>15,}"
                  f"{len(files[name]) / 2**20:>10.2f}{t[1]:>9.2f}{t[32]:>10.1f}"
                  f"{base[1] / t[1]:>6.2f}x{base[32] / t[32]:>6.2f}x")
        if arch == "vgg":
            headline = base[32] / times["pruned int8"][32]
    print("(x: speed-up over the original fp32 ONNX model at batch 1 and 32)")
    print(f"deploy_speedup_int8_pruned_vs_original: {headline:.2f}")


if __name__ == "__main__":
    main()
