"""How long slimming takes on a ResNet-50-sized model, and how fast a plan is recomputed.

1. gamma stats + groups/costs (one trace) + plan + apply on resnet_cifar depth 110 width 4
   (27.6M params, 111 BatchNorms, 16.6k BN channels; ResNet-50 has 25.6M, 53, 26.5k), CPU.
2. plan recompute (what the inspector does on every key press) on ~100k channels: a wide
   residual net of 800 conv-BN layers x 256 channels in 40 residual stages (205k BN channels
   in 440 coupled groups holding 113k group channels).
3. the test zoo (tests/zoo.py), each model in a fresh process: trace + plan at 50% + cut with its
   dummy-batch check; % of channels removed, seconds, the pruned model's largest difference from the
   original with the cut channels zeroed (relative) and from its reload, the process's peak RSS
   (torch included) and how much slimming added to it. YoloV5s-640 is the zoo's YOLOv5 v6.2 at
   YOLOv5s width on 640x640; LeNet (no BatchNorm) shows a refusal.

Usage: python benchmarks/prune_speed.py [--threads N] [--repeats N] [--skip-zoo]
"""

from __future__ import annotations

import argparse
import copy
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
from torch import nn

import engine.models as models
from engine import checkpoint
from engine.errors import SlimlabError
from engine.slim import apply_plan, gamma_stats, plan_from_inputs, precompute
from engine.trust import Trust


def lognormal_gammas(model: nn.Module, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                g = rng.lognormal(-2.0, 1.0, m.num_features).astype(np.float32)
                m.weight.copy_(torch.from_numpy(g))


class WideResidual(nn.Module):
    """Stages of residual 1x1 conv-BN blocks on a 2x2 map: many channels, cheap forward."""

    def __init__(self, stages: int = 40, blocks: int = 10, width: int = 256) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 1, bias=False), nn.BatchNorm2d(width))
        layers = []
        for _ in range(stages * blocks):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                    nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                )
            )  # fmt: skip
        self.blocks = nn.ModuleList(layers)
        self.blocks_per_stage = blocks
        self.transitions = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
            for _ in range(stages)
        )
        self.fc = nn.Linear(width, 10)
        self.default_ignore = ["fc"]
        self.input_size = (3, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            if i % self.blocks_per_stage == 0:  # a new stage: projection, new residual group
                x = torch.relu(self.transitions[i // self.blocks_per_stage](x))
            x = torch.relu(x + block(x))
        return self.fc(x.mean((2, 3)))


def pipeline(repeats: int) -> float:
    times = []
    for r in range(repeats):
        torch.manual_seed(r)
        model = models.build("resnet_cifar", 10, depth=110, width=4).eval()
        lognormal_gammas(model, r)
        t0 = time.perf_counter()
        stats = gamma_stats(model)
        t1 = time.perf_counter()
        inputs = precompute(model, stats=stats)
        t2 = time.perf_counter()
        plan = plan_from_inputs(inputs, percent=0.5, round_to=8)
        t3 = time.perf_counter()
        apply_plan(model, plan)
        t4 = time.perf_counter()
        times.append(t4 - t0)
        print(
            f"  run {r}: gamma {t1 - t0:.3f}s  trace+groups+costs {t2 - t1:.3f}s  "
            f"plan {(t3 - t2) * 1e3:.1f}ms  apply {t4 - t3:.3f}s  total {t4 - t0:.3f}s"
        )
    p = plan.totals
    print(
        f"  {len(inputs.groups)} groups, {inputs.n_channels} channels; params "
        f"{p['params_before'] / 1e6:.1f}M -> {p['params_after'] / 1e6:.1f}M, FLOPs "
        f"{p['flops_before'] / 1e9:.2f}G -> {p['flops_after'] / 1e9:.2f}G"
    )
    return statistics.median(times)


def recompute(repeats: int) -> float:
    torch.manual_seed(0)
    model = WideResidual().eval()
    lognormal_gammas(model)
    t = time.perf_counter()
    inputs = precompute(model)
    print(
        f"  precompute once: {time.perf_counter() - t:.1f}s for {len(inputs.groups)} groups, "
        f"{inputs.n_channels} channels"
    )
    plan_from_inputs(inputs, percent=0.5)  # first call: nothing lazy left, but warm caches
    times = []
    settings = [{"percent": p, "round_to": r} for p in np.linspace(0.3, 0.7, 9) for r in (1, 8)] + [
        {"threshold": 0.1, "min_keep": 0.1, "overrides": {"blocks.1*": {"keep": 0.5}}}
    ]
    for _ in range(repeats):
        for opts in settings:
            t = time.perf_counter()
            plan = plan_from_inputs(inputs, **opts)
            times.append(time.perf_counter() - t)
    print(
        f"  {len(times)} recomputes: median {statistics.median(times) * 1e3:.2f}ms, "
        f"max {max(times) * 1e3:.2f}ms (kept {plan.totals['prunable_after']} of "
        f"{plan.totals['prunable_before']} channels in the last)"
    )
    return statistics.median(times) * 1e3


ZOO_DIR = Path(__file__).resolve().parent.parent / "tests"


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec; ru_maxrss
    there carries over the forking parent's peak, which would hide a child's own figure."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    per_mb = 2**20 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mb


# The zoo's YOLOv5 v6.2 (Detect head decoding in place) at YOLOv5s width on a 640x640 input: the
# size at which torch-pruning's index mapping never finished.
FULL_SIZE = {"YoloV5s-640": ("YoloV5", {"w": 32}, (3, 640, 640))}


def zoo_one(name: str) -> None:
    """Child process: prune one zoo model at 50%, print its figures as JSON. The timed part is what
    `slimlab prune` does (trace, plan, cut with its dummy-batch check); then, untimed, the pruned model
    against the original with the cut channels zeroed, and against its reload from a checkpoint."""
    sys.path.insert(0, str(ZOO_DIR))
    import zoo

    torch.manual_seed(0)
    cls, kwargs, shape = FULL_SIZE.get(name, (name, {}, None))
    model = zoo.randomize(getattr(zoo, cls)(**kwargs))
    original = copy.deepcopy(model)
    shape = shape or zoo.input_size(cls)
    base_mb = peak_rss_mb()  # torch and the model, before slimming
    row: dict = {"model": name}
    t0 = time.perf_counter()
    try:
        inputs = precompute(model, shape)
        plan = plan_from_inputs(inputs, percent=0.5)
        apply_plan(model, plan)
    except SlimlabError as e:  # refused: how long it took to say so, and what it said
        row.update(seconds=time.perf_counter() - t0, refused=str(e))
    else:
        row["seconds"] = time.perf_counter() - t0
    row["rss_mb"] = peak_rss_mb()
    row["rss_growth_mb"] = row["rss_mb"] - base_mb
    if "refused" not in row:
        t = plan.totals
        x = torch.randn(3, *shape)
        arch = checkpoint.arch_dict(f"zoo:{cls}", 4 if cls.startswith("Yolo") else 10, kwargs=kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pruned.pt"
            checkpoint.save(path, model, arch, plan=plan.to_dict())
            reloaded = checkpoint.load(path, trust=Trust().allowing(arch["name"])).model
        with torch.no_grad():
            out = model.eval()(x)
            masked = zoo.max_rel_diff(zoo.masked_copy(original, inputs.groups, plan).eval()(x), out)
            reload = zoo.max_rel_diff(out, reloaded.eval()(x))
        row.update(removed=1 - t["channels_after"] / t["channels_before"],
                   params=1 - t["params_after"] / t["params_before"], masked=masked, reload=reload,
                   groups=len(inputs.groups), prunable=int(sum(g.prunable for g in inputs.groups)))
    print(json.dumps(row))


def zoo_table(threads: int) -> list[dict]:
    sys.path.insert(0, str(ZOO_DIR))
    import zoo

    rows = []
    for name in [*sorted(zoo.ZOO), *FULL_SIZE, "LeNet"]:  # LeNet: no BatchNorm, refused with the reason
        out = subprocess.run([sys.executable, __file__, "--zoo-one", name, "--threads", str(threads)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"  {'model':<17} {'groups':>7} {'removed':>8} {'params':>7} {'time':>7} {'masked':>8} "
          f"{'reload':>7} {'peak RSS':>9} {'growth':>7}")
    for r in rows:
        head = f"  {r['model']:<17} "
        tail = f"{r['seconds']:>6.2f}s"
        mem = f"{r['rss_mb']:>6.0f} MB {r['rss_growth_mb']:>4.0f} MB"
        if "refused" in r:
            print(f"{head}{'refused':>33} {tail} {'':>17} {mem}  ({r['refused'][:60]}...)")
            continue
        print(f"{head}{r['prunable']:>3}/{r['groups']:<3} {r['removed']:>8.1%} {r['params']:>7.1%} {tail} "
              f"{r['masked']:>8.1e} {r['reload']:>7.1e} {mem}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-zoo", action="store_true")
    parser.add_argument("--zoo-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.zoo_one:
        zoo_one(args.zoo_one)
        return
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    print("prune pipeline on resnet_cifar depth 110 width 4 (targets: <= 3 s)")
    pipeline_s = pipeline(args.repeats)
    print("plan recompute on ~100k channels (target: <= 20 ms)")
    plan_ms = recompute(args.repeats)
    rows = [] if args.skip_zoo else None
    if rows is None:
        print("test zoo at 50%, one fresh process per model (trace, plan, cut, dummy-batch check)")
        rows = zoo_table(args.threads)
        pruned = [r for r in rows if "refused" not in r]
        slowest = max(rows, key=lambda r: r["seconds"])
        heaviest = max(rows, key=lambda r: r["rss_mb"])
        print(f"zoo_slowest_s: {slowest['seconds']:.2f} ({slowest['model']})")
        print(f"zoo_peak_rss_mb: {heaviest['rss_mb']:.0f} ({heaviest['model']})")
        print(f"zoo_worst_masked_diff: {max(r['masked'] for r in pruned):.1e}")
        print(f"zoo_worst_reload_diff: {max(r['reload'] for r in pruned):.1e}")
    print(f"prune_pipeline_s: {pipeline_s:.3f}")
    print(f"plan_recompute_ms: {plan_ms:.2f}")


if __name__ == "__main__":
    main()
