"""`slimlab inspect CKPT` and `slimlab prune CKPT`: slimming from the shell, without the workbench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PresetError


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """The checkpoint and how to read it: shared by inspect, prune and export."""
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--arch", help="architecture of a bare state_dict: a registry name or package.module:Class "
                   "(the current folder is on the import path)")
    p.add_argument("--num-classes", type=int, help="with --arch: the classifier's outputs (default: read from the state_dict)")
    p.add_argument("--in-channels", type=int, help="with --arch: input channels (default: from --input-size, else 3)")
    p.add_argument("--arch-kwargs", default="{}", help='with --arch: constructor kwargs as JSON, e.g. \'{"width": 0.5}\'; '
                   'a "package.module:Class" value is that class, e.g. \'{"block": "models.resnet:BasicBlock"}\'')
    p.add_argument("--input-size", metavar="CxHxW", help="the input the model runs on, e.g. 3x64x64 (default: the "
                   "model's input_size, 3x32x32 for your own classes); the pruned checkpoint records it")
    p.add_argument("--trust", action="store_true",
                   help="trust the file: unpickle objects and build the package.module:Class it names (only for files you trust)")
    p.add_argument("--allow-arch", action="append", default=[], metavar="MODULE:CLASS",
                   help="allow building this package.module:Class when the file names it")


def inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab inspect", description="Per-layer BatchNorm |gamma| statistics and the coupled channel groups.")
    add_checkpoint_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def prune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab prune", description="Prune a checkpoint by a global percent or a |gamma| threshold; "
                                "writes the pruned checkpoint and its plan beside it (X.pt, X.plan.json) and prints before -> after.")
    add_checkpoint_arguments(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--percent", type=float, help="fraction of channels removed, by the global |gamma| percentile: [0, 1)")
    how.add_argument("--threshold", type=float, help="absolute |gamma| threshold")
    how.add_argument("--target-flops", type=float, metavar="F", help="keep at most this fraction of the FLOPs: (0, 1]")
    how.add_argument("--target-params", type=float, metavar="F", help="keep at most this fraction of the parameters: (0, 1]")
    how.add_argument("--max-drop", type=float, metavar="POINTS",
                     help="largest ratio whose accuracy before finetuning stays within POINTS of the unpruned model "
                          "(needs --data)")
    p.add_argument("--data", metavar="DATASET", help="with --max-drop: the dataset to measure on (shapes, cifar10, ...)")
    p.add_argument("--data-path", type=Path, help="with --data: its files")
    p.add_argument("--min-keep", type=float, default=1, help="channels kept per layer at least: a whole number is a count (0 allowed), below 1 a fraction")
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
    from engine.models.catalog import class_refs
    from engine.models.sizing import parse_input_size

    shape = parse_input_size(args.input_size) if args.input_size else None
    try:
        kwargs = json.loads(args.arch_kwargs)
    except ValueError as e:
        raise PresetError(f"--arch-kwargs is not JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise PresetError(f"--arch-kwargs must be a JSON object of constructor arguments, not {args.arch_kwargs!r}")
    in_channels = args.in_channels or (shape[0] if shape else 3)
    if shape and shape[0] != in_channels:
        raise PresetError(f"--input-size {args.input_size} has {shape[0]} channels but --in-channels is {in_channels}")
    # what the user typed is theirs: --arch, the classes in --arch-kwargs and --allow-arch may be built
    trust = Trust.of(args.trust).allowing(*allowed, args.arch, *class_refs(kwargs))
    arch = None
    if args.arch:
        num_classes = args.num_classes or _num_classes(args.checkpoint, args.arch, in_channels, kwargs, trust)
        arch = checkpoint.arch_dict(args.arch, num_classes, in_channels, kwargs, input_size=shape)
    loaded = checkpoint.load(args.checkpoint, arch=arch, trust=trust)
    if shape:
        if getattr(loaded.model, "input_size", shape)[0] != shape[0]:
            raise PresetError(f"--input-size {args.input_size}: the model takes {loaded.model.input_size[0]} input channels")
        loaded.model.input_size = shape
        loaded.arch = {**loaded.arch, "input_size": list(shape)}
    return loaded


def _num_classes(path: Path, arch: str, in_channels: int, kwargs: dict, trust: Any) -> int:
    """--num-classes left out: read from the state_dict (or the model's own count, for a class without it)."""
    from engine import checkpoint
    from engine.models import build_from
    from engine.models.classes import infer_num_classes, takes_num_classes

    if not takes_num_classes(arch, trust):  # e.g. a class taking `nc`: its kwargs give the count
        model = build_from(arch, 1, in_channels, kwargs, trust=trust)
        last = model.get_submodule(model.default_ignore[-1]) if getattr(model, "default_ignore", None) else None
        return int(getattr(last, "out_features", getattr(last, "out_channels", 1)))
    raw = checkpoint.read_raw(path, trust=trust.pickles)
    state = checkpoint.find_state_dict(raw)
    if checkpoint.is_slimlab(raw) or state is None:
        return 1  # the file names its own architecture; --arch is not used for it
    return infer_num_classes(arch, in_channels, kwargs, state, trust=trust)


def inspect(args: argparse.Namespace) -> int:
    from engine.slim.gamma import gamma_stats
    from engine.slim.gamma_ref import initial_gamma, reference_scale
    from engine.slim.inputs import precompute
    from engine.slim.progress import TraceProgress

    loaded = load(args)
    stats = gamma_stats(loaded.model)
    inputs = precompute(loaded.model, stats=stats, progress=TraceProgress())
    initial = initial_gamma(loaded.arch, loaded.model)
    layers = [_layer_row(name, stats.gammas[name], initial.get(name, 1.0)) for name in stats.layers]
    groups = [{"id": g.id, "root": g.root, "channels": g.total * g.width, "units": g.total, "width": g.width,
               "layers": g.layers, "convs": g.convs, "prunable": g.prunable, "reason": g.reason,
               "fixed_channels": int(g.fixed.sum()) * g.width, "note": g.note} for g in inputs.groups]
    everything = stats.all()
    scale = np.concatenate([np.full(stats.gammas[n].size, initial.get(n, 1.0)) for n in stats.layers])
    overall = {"channels": int(everything.size), **_figures(everything),
               "initial_gamma": reference_scale(initial, stats.layers), **_relative(everything / scale)}
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "arch": loaded.arch, "plan": loaded.plan is not None,
                          "overall": overall, "layers": layers, "groups": groups, "skipped": stats.skipped}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:  # piped: never cut layer names at the 80 columns rich assumes
        console = Console(highlight=False, width=1000)
    t = Table(title=f"BatchNorm |gamma| of {args.checkpoint}", title_justify="left")
    for col in ("layer", "channels", "min", "median", "max", "initial", "<1% of initial"):
        t.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
    for r in layers:
        t.add_row(r["layer"], str(r["channels"]), f"{r['min']:.4g}", f"{r['median']:.4g}", f"{r['max']:.4g}",
                  f"{r['initial_gamma']:.3g}", f"{r['rel_lt_1e-2']:.1%}")
    console.print(t)
    g = Table(title="coupled channel groups (channels cut together)", title_justify="left")
    for col in ("group", "root conv", "channels", "BN layers", "prunable"):
        g.add_column(col, overflow="fold")
    for r in groups:
        channels = str(r["channels"]) + (f" ({r['units']} x {r['width']})" if r["width"] > 1 else "")
        verdict = ("yes" + (f" ({r['note']})" if r["note"] else "")) if r["prunable"] else f"no: {r['reason']}"
        g.add_row(str(r["id"]), r["root"], channels, ", ".join(r["layers"]) or "-", verdict)
    console.print(g)
    console.print(f"{overall['channels']} BN channels; median |gamma| {overall['median']:.4g} "
                  f"({overall['rel_median']:.3g} of the initial {overall['initial_gamma']:.3g}); "
                  f"{overall['rel_lt_1e-2']:.1%} below 1% of their initial gamma ({overall['lt_1e-2']:.1%} below 1e-2)")
    return 0


def _figures(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {"min": 0.0, "median": 0.0, "max": 0.0, "lt_1e-2": 0.0}
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max()), "lt_1e-2": float((a < 1e-2).mean())}


def _relative(rel: np.ndarray) -> dict[str, float]:
    """Figures of |gamma| / initial gamma: they mean the same for every model (engine/slim/gamma_ref.py)."""
    if rel.size == 0:
        return {"rel_median": 0.0, "rel_lt_1e-2": 0.0}
    return {"rel_median": float(np.median(rel)), "rel_lt_1e-2": float((rel < 1e-2).mean())}


def _layer_row(name: str, a: np.ndarray, initial: float) -> dict[str, Any]:
    return {"layer": name, "channels": int(a.size), **_figures(a), "initial_gamma": initial, **_relative(a / initial)}


def prune(args: argparse.Namespace) -> int:
    from engine.slim.prune_file import default_out, prune_checkpoint
    from engine.slim.spec import PruneRule
    from engine.slim.target import plan_for_rule

    if args.percent is not None and not 0 <= args.percent < 1:
        raise PresetError(f"--percent {args.percent} is outside [0, 1): it is the fraction of channels removed, e.g. 0.5")
    from engine.slim.spec import min_keep_value

    if args.round_to < 1:
        raise PresetError("--round-to must be >= 1")
    try:
        min_keep = min_keep_value(args.min_keep)  # the same reading as a preset's min_keep
    except ValueError as e:
        raise PresetError(f"--min-keep {args.min_keep:g}: {e}") from None
    for flag, v in (("--target-flops", args.target_flops), ("--target-params", args.target_params)):
        if v is not None and not 0 < v <= 1:
            raise PresetError(f"{flag} {v} is outside (0, 1]: it is the fraction kept, e.g. 0.5")
    if args.max_drop is not None and (args.max_drop <= 0 or not args.data):
        raise PresetError("--max-drop needs a positive number of accuracy points and --data DATASET "
                          "(e.g. --max-drop 1.0 --data cifar10 --data-path data/cifar10)")
    from engine.slim.progress import TraceProgress

    loaded = load(args)
    progress = TraceProgress()
    rule = PruneRule(
        percent=args.percent, threshold=args.threshold, target_flops=args.target_flops,
        target_params=args.target_params, max_drop=args.max_drop, min_keep=min_keep, round_to=args.round_to,
        score=args.score, ignore=list(args.ignore),
    )
    evaluate = _data_evaluator(args, loaded) if args.max_drop is not None else None
    plan, _ = plan_for_rule(loaded.model, None, rule, evaluate=evaluate, progress=progress)
    from engine.slim.report import prune_lines

    lines = prune_lines("prune", plan)
    for line in lines:
        print(line.removeprefix("[prune] "), file=sys.stderr if " warning: " in line else sys.stdout)
    out = args.out or default_out(args.checkpoint)
    result = prune_checkpoint(loaded, plan, out, source=args.checkpoint, progress=progress)
    print(f"wrote {result['checkpoint']} and {result['plan']}")
    return 0


def _data_evaluator(args: argparse.Namespace, loaded: Any) -> Any:
    """Val accuracy of pruned copies on --data, BatchNorm statistics re-estimated on its train split."""
    import torch

    from engine import data
    from engine.config import DataSpec
    from engine.slim.bn_calibrate import calibration_samples, first_batches, recalibrate
    from engine.train import evaluate

    classes = (loaded.arch or {}).get("num_classes")
    extra = {"num_classes": classes} if args.data == "shapes" and isinstance(classes, int) else {}
    try:
        spec = DataSpec(dataset=args.data, path=args.data_path, augment=False, **extra)
    except ValueError as e:
        raise PresetError(f"--data {args.data}: {e}") from None
    bundle = data.build(spec, batch_size=256)
    if isinstance(classes, int) and bundle.num_classes != classes:
        raise PresetError(f"--data {args.data} has {bundle.num_classes} classes but the model predicts {classes}")
    device = torch.device("cpu")

    def run(m: Any) -> dict[str, float]:
        recalibrate(m, first_batches(bundle.train, calibration_samples(bundle.train)), device)
        return evaluate(m, bundle.val, device)

    return run
