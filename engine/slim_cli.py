"""`slimlab inspect CKPT` and `slimlab prune CKPT`: slimming from the shell, without the workbench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PresetError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--arch", help="architecture of a bare state_dict: a registry name or package.module:Class")
    p.add_argument("--num-classes", type=int, help="with --arch: the classifier's outputs")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--arch-kwargs", default="{}", help='with --arch: constructor kwargs as JSON, e.g. \'{"width": 0.5}\'')
    p.add_argument("--trust", action="store_true",
                   help="trust the file: unpickle objects and build the package.module:Class it names (only for files you trust)")
    p.add_argument("--allow-arch", action="append", default=[], metavar="MODULE:CLASS",
                   help="allow building this package.module:Class when the file names it")


def inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab inspect", description="Per-layer BatchNorm |gamma| statistics and the coupled channel groups.")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def prune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab prune", description="Prune a checkpoint by a global percent or a |gamma| threshold; "
                                "writes the pruned checkpoint and plan.json beside it and prints before -> after.")
    _common(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--percent", type=float, help="fraction of channels removed, by the global |gamma| percentile: [0, 1)")
    how.add_argument("--threshold", type=float, help="absolute |gamma| threshold")
    p.add_argument("--min-keep", type=float, default=1, help="channels kept per layer at least: a count (>= 1) or a fraction (< 1)")
    p.add_argument("--round-to", type=int, default=1, help="round kept counts up to a multiple (8 for fast kernels)")
    p.add_argument("--score", choices=["max", "mean", "l2"], default="max", help="group score from its BN layers' |gamma|")
    p.add_argument("--ignore", action="append", default=[], metavar="PATTERN", help="layer name pattern never pruned")
    p.add_argument("--out", type=Path, help="pruned checkpoint (default: CKPT-pruned.pt beside it)")
    return p


def main(cmd: str, argv: list[str]) -> int:
    if cmd == "inspect":
        return inspect(inspect_parser().parse_args(argv))
    return prune(prune_parser().parse_args(argv))


def load(args: argparse.Namespace) -> Any:
    from engine import checkpoint
    from engine.trust import Trust, arch_names

    try:
        allowed = arch_names(args.allow_arch)
    except ValueError as e:
        raise PresetError(str(e)) from None
    arch = None
    if args.arch:
        if args.num_classes is None:
            raise PresetError("--arch needs --num-classes (the classifier's outputs)")
        try:
            kwargs = json.loads(args.arch_kwargs)
        except ValueError as e:
            raise PresetError(f"--arch-kwargs is not JSON: {e}") from None
        arch = checkpoint.arch_dict(args.arch, args.num_classes, args.in_channels, kwargs)
    # what the user typed is theirs: --arch and --allow-arch may be built
    trust = Trust.of(args.trust).allowing(*allowed, args.arch)
    return checkpoint.load(args.checkpoint, arch=arch, trust=trust)


def inspect(args: argparse.Namespace) -> int:
    from engine.slim.gamma import gamma_stats
    from engine.slim.inputs import precompute

    loaded = load(args)
    stats = gamma_stats(loaded.model)
    inputs = precompute(loaded.model, stats=stats)
    layers = [_layer_row(name, stats.gammas[name]) for name in stats.layers]
    groups = [{"id": g.id, "root": g.root, "channels": g.total, "layers": g.layers, "convs": g.convs,
               "prunable": g.prunable, "reason": g.reason} for g in inputs.groups]
    everything = stats.all()
    overall = {"channels": int(everything.size), **_figures(everything)}
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "arch": loaded.arch, "plan": loaded.plan is not None,
                          "overall": overall, "layers": layers, "groups": groups, "skipped": stats.skipped}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    t = Table(title=f"BatchNorm |gamma| of {args.checkpoint}", title_justify="left")
    for col in ("layer", "channels", "min", "median", "max", "<1e-2"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in layers:
        t.add_row(r["layer"], str(r["channels"]), f"{r['min']:.4g}", f"{r['median']:.4g}", f"{r['max']:.4g}", f"{r['lt_1e-2']:.1%}")
    console.print(t)
    g = Table(title="coupled channel groups (channels cut together)", title_justify="left")
    for col in ("group", "root conv", "channels", "BN layers", "prunable"):
        g.add_column(col)
    for r in groups:
        g.add_row(str(r["id"]), r["root"], str(r["channels"]), ", ".join(r["layers"]) or "-",
                  "yes" if r["prunable"] else f"no: {r['reason']}")
    console.print(g)
    console.print(f"{overall['channels']} BN channels; median |gamma| {overall['median']:.4g}; "
                  f"{overall['lt_1e-2']:.1%} below 1e-2")
    return 0


def _figures(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {"min": 0.0, "median": 0.0, "max": 0.0, "lt_1e-2": 0.0}
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max()), "lt_1e-2": float((a < 1e-2).mean())}


def _layer_row(name: str, a: np.ndarray) -> dict[str, Any]:
    return {"layer": name, "channels": int(a.size), **_figures(a)}


def prune(args: argparse.Namespace) -> int:
    from engine.slim.plan import make_plan
    from engine.slim.prune_file import default_out, prune_checkpoint

    if args.percent is not None and not 0 <= args.percent < 1:
        raise PresetError(f"--percent {args.percent} is outside [0, 1): it is the fraction of channels removed, e.g. 0.5")
    if args.round_to < 1 or args.min_keep < 0:
        raise PresetError("--round-to must be >= 1 and --min-keep >= 0")
    loaded = load(args)
    min_keep = int(args.min_keep) if args.min_keep >= 1 else args.min_keep
    plan = make_plan(loaded.model, percent=args.percent, threshold=args.threshold, min_keep=min_keep,
                     round_to=args.round_to, score=args.score, ignore=args.ignore)
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    out = args.out or default_out(args.checkpoint)
    result = prune_checkpoint(loaded, plan, out, source=args.checkpoint)
    t = plan.totals
    print(f"channels {t['channels_before']} -> {t['channels_after']} "
          f"({1 - t['channels_after'] / max(1, t['channels_before']):.1%} removed)")
    print(f"params   {t['params_before']:,} -> {t['params_after']:,} ({1 - t['params_after'] / max(1, t['params_before']):.1%} fewer)")
    print(f"FLOPs    {t['flops_before']:,} -> {t['flops_after']:,} ({1 - t['flops_after'] / max(1, t['flops_before']):.1%} fewer)")
    print(f"wrote {result['checkpoint']} and {result['plan']}")
    return 0
