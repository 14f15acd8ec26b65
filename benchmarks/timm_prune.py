"""timm CNNs cut at percent 0.5: slimlab beside Torch-Pruning's BNScaleImportance at ratio 0.5.

Each model, built by timm with pretrained=False and given log-normal |gamma| (the spread sparse
training leaves; the same weights for both libraries), is cut in a fresh process per library:

- slimlab: trace, plan (percent 0.5, round_to 8, score max), cut with its dummy-batch check
  (`slimlab prune`); the FLOPs removed with score l2 are shown beside (plan only).
- Torch-Pruning 1.6.1: DependencyGraph, MetaPruner with BNScaleImportance, pruning_ratio 0.5,
  global_pruning (network slimming's global threshold), round_to 8, the classifier ignored.

Figures: groups (slimlab: prunable / all; Torch-Pruning: groups cut / all), channels (output
channels of every conv and linear layer), params and FLOPs removed (both counted by slimlab's
counter on the cut model), the cut model's largest difference from the original with the cut
channels zeroed where conv and linear layers read them (relative to the largest output), and
from its reload (slimlab: checkpoint rebuilt from `timm:<name>` + plan, weights_only; Torch-Pruning:
the whole module pickled, as it saves a pruned model), the time of the cut (slimlab's includes its
dummy-batch check; "(cut)" is the part spent cutting and checking, after the plan), and the
process's peak RSS.

Needs the detection environment (timm, torch-pruning). Usage:
.venv-detect/bin/python benchmarks/timm_prune.py [--px 224] [--threads 1] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from prune_speed import peak_rss_mb  # noqa: E402

MODELS = [
    "resnet18d", "resnet50d", "dla34", "ghostnet_100", "cspresnet50", "dpn68", "gernet_s",
    "mobilenetv3_large_100", "repvgg_a0", "tf_mixnet_s", "rexnet_100", "efficientnet_b0",
    "densenet121", "regnety_004", "ecaresnet26t", "res2net50_14w_8s", "skresnet18", "hrnet_w18_small",
]


def build(name: str) -> nn.Module:
    """The timm model with |gamma| spread like after sparse training (same seed: same weights)."""
    from engine.models import build as build_arch
    from engine.slim.gamma import is_batch_norm

    torch.manual_seed(0)
    model = build_arch(f"timm:{name}", 10)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in model.modules():
            if is_batch_norm(m) and getattr(m, "weight", None) is not None:
                n = m.weight.numel()
                m.weight.copy_(torch.from_numpy(rng.lognormal(-2.0, 1.0, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
    return model.eval()


def channels(model: nn.Module) -> int:
    return sum(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
               for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)))


def figures(original: nn.Module, pruned: nn.Module, masked: nn.Module, reloaded: nn.Module, shape) -> dict:
    from engine.measure import count_flops, count_params

    import zoo

    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = pruned.eval()(x)
        row = {"masked": zoo.max_rel_diff(masked.eval()(x), out), "reload": zoo.max_rel_diff(out, reloaded.eval()(x))}
    for key, count in (("channels", channels), ("params", count_params),
                       ("flops", lambda m: count_flops(m, shape))):
        row[key] = 1 - count(pruned) / count(original)
    return row


def zeroed(model: nn.Module, gone: dict[str, list[int]]) -> nn.Module:
    """A copy of `model` with input channels `gone` ({layer: original channel indices}) zeroed."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, chans in gone.items():
            layer = model.get_submodule(name)
            for c in chans:
                if isinstance(layer, nn.Linear):
                    layer.weight[:, c] = 0
                else:
                    cpg, opg = layer.in_channels // layer.groups, layer.out_channels // layer.groups
                    layer.weight[c // cpg * opg:(c // cpg + 1) * opg, c % cpg] = 0
    return model


def run_slimlab(name: str, shape) -> dict:
    from engine import checkpoint
    from engine.slim.apply import apply_plan
    from engine.slim.inputs import precompute
    from engine.slim.plan import plan_from_inputs

    import zoo

    model = build(name)
    original = copy.deepcopy(model)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    inputs = precompute(model, shape)
    plan = plan_from_inputs(inputs, percent=0.5, round_to=8)
    t1 = time.perf_counter()
    apply_plan(model, plan)
    seconds = time.perf_counter() - t0
    rss = peak_rss_mb()
    l2 = plan_from_inputs(inputs, percent=0.5, round_to=8, score="l2").totals
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pruned.pt"
        checkpoint.save(path, model, checkpoint.arch_dict(f"timm:{name}", 10), plan=plan.to_dict())
        reloaded = checkpoint.load(path).model
    row = figures(original, model, zoo.masked_copy(original, inputs.groups, plan), reloaded, shape)
    row.update(seconds=seconds, seconds_cut=seconds - (t1 - t0),
               rss_mb=rss, rss_growth_mb=rss - base, groups=len(inputs.groups),
               cut=int(sum(g.prunable for g in inputs.groups)),
               flops_l2=1 - l2["flops_after"] / l2["flops_before"],
               warnings=[w for w in plan.warnings if "FLOPs" in w or "asked to cut" in w])
    return row


def run_torch_pruning(name: str, shape) -> dict:
    import torch_pruning as tp

    model = build(name)
    original = copy.deepcopy(model)
    names = {m: n for n, m in model.named_modules()}
    ignored = [model.get_submodule(n) for n in model.default_ignore]
    alive = {n: list(range(m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else m.in_features))
             for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    gone: dict[str, list[int]] = {}
    unmapped: list[str] = []
    base = peak_rss_mb()
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, torch.randn(1, *shape), importance=tp.importance.BNScaleImportance(),
                                  pruning_ratio=0.5, global_pruning=True, ignored_layers=ignored, round_to=8)
    cut = 0
    for group in pruner.step(interactive=True):  # the input channels each group removes, in original numbering
        for dep, idxs in group:
            module = dep.target.module
            if names.get(module) in alive and not pruner.DG.is_out_channel_pruning_fn(dep.handler):
                n, pos = names[module], {int(getattr(i, "idx", i)) for i in idxs}
                if pos and max(pos) >= len(alive[n]):  # indices beyond the layer's inputs: not mappable
                    unmapped.append(n)
                    continue
                gone.setdefault(n, []).extend(alive[n][i] for i in pos)
                alive[n] = [a for i, a in enumerate(alive[n]) if i not in pos]
        group.prune()
        cut += 1
    seconds = time.perf_counter() - t0
    rss = peak_rss_mb()
    total = sum(1 for _ in pruner.DG.get_all_groups(ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)))
    try:
        with torch.no_grad():
            model(torch.randn(1, *shape))
    except Exception as e:
        raise RuntimeError(f"the pruned model fails to run: {type(e).__name__}: {e}") from e
    buffer = io.BytesIO()
    torch.save(model, buffer)  # how Torch-Pruning saves a pruned model: the whole module, pickled
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=False)
    row = figures(original, model, zeroed(original, gone), reloaded, shape)
    if unmapped:  # the zeroed original is not what Torch-Pruning cut: no masked figure
        row["masked"] = None
    row.update(seconds=seconds, rss_mb=rss, rss_growth_mb=rss - base, groups=total, cut=cut)
    return row


def child(lib: str, name: str, px: int) -> None:
    shape = (3, px, px)
    try:
        row = run_slimlab(name, shape) if lib == "slimlab" else run_torch_pruning(name, shape)
    except Exception as e:  # reported in the table: what failed and how
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        row = {"failed": f"{type(e).__name__}: {text}"[:300]}
    print(json.dumps({"model": name, "lib": lib, **row}))


def table(rows: list[dict], px: int) -> None:
    print(f"\ntimm CNNs at {px}x{px}, percent / ratio 0.5, round_to 8 (removed: share of the original; "
          "masked / reload: largest relative difference)")
    head = (f"{'model':<22} {'lib':<8} {'groups':>7} {'chan':>6} {'params':>7} {'FLOPs':>6} {'(l2)':>6} "
            f"{'masked':>8} {'reload':>8} {'time':>7} {'(cut)':>7} {'RSS':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        start = f"{r['model']:<22} {r['lib']:<8} "
        if "failed" in r:
            print(start + "failed: " + r["failed"][:90])
            continue
        l2 = f"{r['flops_l2']:>6.1%}" if "flops_l2" in r else f"{'':>6}"
        cut = f"{r['seconds_cut']:>6.2f}s" if "seconds_cut" in r else f"{'':>7}"
        print(start + f"{r['cut']:>3}/{r['groups']:<3} {r['channels']:>6.1%} {r['params']:>7.1%} {r['flops']:>6.1%} {l2} "
              f"{'n/a' if r['masked'] is None else format(r['masked'], '.1e'):>8} {r['reload']:>8.1e} "
              f"{r['seconds']:>6.2f}s {cut} {r['rss_mb']:>5.0f} MB")


def summary(rows: list[dict]) -> None:
    by = {(r["model"], r["lib"]): r for r in rows}
    names = list(dict.fromkeys(r["model"] for r in rows))
    ok = {lib: [n for n in names if "failed" not in by.get((n, lib), {"failed": 1})] for lib in ("slimlab", "tp")}
    for lib, label in (("slimlab", "slimlab"), ("tp", "Torch-Pruning")):
        done = ok[lib]
        reach = [n for n in done if by[(n, lib)]["flops"] >= 0.4]
        exact = [n for n in done if by[(n, lib)]["masked"] is not None and by[(n, lib)]["masked"] <= 1e-4]
        print(f"{label}: {len(done)}/{len(names)} cut; >= 40% FLOPs removed: {len(reach)}; masked-equivalent "
              f"(<= 1e-4): {len(exact)}")
    both = [n for n in ok["slimlab"] if n in ok["tp"]]
    if both:
        ratio = [by[(n, "tp")]["seconds"] / by[(n, "slimlab")]["seconds"] for n in both]
        print(f"time, Torch-Pruning / slimlab on the {len(both)} models both cut: median {np.median(ratio):.2f}x, "
              f"min {min(ratio):.2f}x, max {max(ratio):.2f}x")
    for n in names:
        r = by.get((n, "slimlab"), {})
        if "failed" not in r and r["flops"] < 0.4:
            print(f"{n}: slimlab removes {r['flops']:.1%} of the FLOPs; the plan says: " + (" | ".join(r["warnings"]) or "-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per model and library")
    parser.add_argument("--child", nargs=2, metavar=("LIB", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], args.child[1], args.px)
        return
    from importlib.metadata import version

    print(f"torch {torch.__version__}, timm {version('timm')}, torch-pruning {version('torch-pruning')}, "
          f"{args.threads} CPU thread(s)")
    rows = []
    for name in args.models.split(","):
        for lib in ("slimlab", "tp"):
            try:
                out = subprocess.run([sys.executable, __file__, "--child", lib, name, "--px", str(args.px),
                                      "--threads", str(args.threads)], capture_output=True, text=True,
                                     timeout=args.timeout)
            except subprocess.TimeoutExpired:
                row = {"model": name, "lib": lib, "failed": f"did not finish in {args.timeout:.0f} s"}
            else:
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                row = json.loads(lines[-1]) if lines else {
                    "model": name, "lib": lib, "failed": (out.stderr.strip().splitlines() or ["no output"])[-1]}
            rows.append(row)
            print(f"  {name} {lib}: " + (row.get("failed") or f"{row['seconds']:.2f}s"), flush=True)
    table(rows, args.px)
    summary(rows)


if __name__ == "__main__":
    main()
