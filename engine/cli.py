"""The headless command line: `slimlab --batch PRESET`, `inspect`, `prune`, `export`, `quantize`, `run`.

Exit codes are typed so scripts can tell failures apart (see ExitCode).
"""

from __future__ import annotations

import argparse
import enum
import os
import signal
import sys
from pathlib import Path
from typing import Any

from engine.errors import Cancelled, PresetError, RunBusy, SlimlabError


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # the run (or command) failed
    USAGE = 2  # bad arguments or preset
    INTERRUPTED = 130  # SIGINT/SIGTERM: stopped at a step boundary, last.pt written


BATCH_HELP = """\
Run a preset headless: create a run directory and execute its stages.

Progress is shown as bars on a terminal and as plain lines when the output is piped.
Exit codes: 0 done, 1 run failed, 2 bad usage or preset, 130 interrupted (last.pt written;
resume with --resume RUN_DIR).
"""


def batch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab --batch", description=BATCH_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", nargs="?", help="preset YAML file, or the name of a built-in preset (e.g. demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set training.lr=0.05 --set stages.1.s=1e-4")
    p.add_argument("--runs-dir", type=Path, help="where run directories go (default: the preset's output.runs_dir, runs/)")
    p.add_argument("--name", help="run name (default: the preset's name); -2, -3 ... are added when taken")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a failed or cancelled run from its last good state")
    p.add_argument("--plain", action="store_true", help="plain log lines even on a terminal")
    p.add_argument("--world-size-change", action="store_true",
                   help="with --resume: continue a run with another number of processes (torchrun's "
                        "--nproc_per_node) than it was started with; its results then differ")
    add_trust_arguments(p)
    return p


def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", action="store_true",
                   help="trust the files this run reads: pickled objects load and the package.module:Class "
                        "they name may be built (only for files you trust)")
    p.add_argument("--allow-arch", action="append", default=[], metavar="MODULE:CLASS",
                   help="allow building this package.module:Class when a file names it (a checkpoint, a teacher, "
                        "a copied run directory's spec.yaml)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: slimlab [PATH] [--runs-dir DIR] [--presets-dir DIR]   open the workbench\n"
              "       slimlab --batch PRESET [--set KEY=VALUE ...]           run a preset headless\n"
              "       slimlab inspect CKPT | slimlab prune CKPT ...          slimming from the shell\n"
              "       slimlab export CKPT | slimlab quantize MODEL.onnx ...  ONNX and INT8 for deployment\n"
              "       slimlab --batch --help, slimlab inspect --help, slimlab prune --help, slimlab export --help, ...")
        return ExitCode.OK
    if argv[0] == "--version":
        from engine import __version__

        print(f"slimlab {__version__}")
        return ExitCode.OK
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "--batch":
            return batch(rest)
        if cmd == "run":
            return run_existing(rest)
        if cmd in ("inspect", "prune"):
            from engine import slim_cli

            return slim_cli.main(cmd, rest)
        if cmd in ("export", "quantize"):
            from engine.deploy import cli as deploy_cli

            return deploy_cli.main(cmd, rest)
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except SlimlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.FAILED
    except OSError as e:  # before a run started: a runs folder that cannot be written, ...
        from engine.atomic import describe_os_error

        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"error: unknown command {cmd!r}; try slimlab --help", file=sys.stderr)
    return ExitCode.USAGE


def batch(argv: list[str]) -> int:
    args = batch_parser().parse_args(argv)
    from engine import config, runs

    allow = allowed_archs(args.allow_arch)
    if args.resume is not None:
        if args.preset:
            raise PresetError("--resume continues a run with the spec.yaml in its directory; give no preset with it "
                              "(--set changes a setting that is safe to change, e.g. --set training.lr=0.01)")
        return execute(args.resume, resume=True, plain=args.plain, trust=args.trust, allow_archs=allow,
                       overrides=args.overrides, world_size_change=args.world_size_change)
    if args.world_size_change:
        raise PresetError("--world-size-change goes with --resume RUN_DIR (a new run takes any world size)")
    if not args.preset:
        raise PresetError("no preset given: slimlab --batch PRESET (see slimlab --batch --help)")
    spec = config.load_preset(args.preset, args.overrides)
    if allow:  # recorded in spec.yaml, so a resume builds them too
        spec.allow_archs = list(dict.fromkeys([*spec.allow_archs, *allow]))
    if spec.task == "detect":  # the optional Ultralytics extra: say how to install it before a run exists
        from engine.detect.ultra import load as need_ultralytics

        need_ultralytics()
    from engine import preflight

    # the whole preset, before a run directory exists: a mistake never costs a stage
    preflight.check(spec, run_trust(None, spec, trust=args.trust, allow_archs=[], fresh=True), source=str(args.preset))
    runs_dir = args.runs_dir or spec.output.runs_dir
    name = args.name or spec.output.name or spec.name
    from engine import distributed

    info = distributed.from_env()
    if info.enabled:  # before the run directory exists: one process per GPU, a batch that divides
        from engine.train import resolve_device

        resolve_device(spec.training.device, info)
        if spec.task == "detect":
            check_detect_world(spec, info, str(args.preset))
    path = (shared_run_dir(runs_dir, name, info, spec.training.device) if info.enabled
            else runs.create_run_dir(runs_dir, name))
    prepare_run_dir(path, spec, info.is_main)
    return execute(path, resume=False, plain=args.plain, trust=args.trust, spec=spec, checked=True)


def check_detect_world(spec: Any, info: Any, source: str) -> None:
    """A detection run under torchrun: every training stage's batch divides among the processes (Ultralytics
    gives each rank batch // world_size images: the rest would be dropped without a word)."""
    from engine import distributed
    from engine.config import TRAINING_STAGES
    from engine.pipeline import expand_rounds

    for stage in expand_rounds(spec):
        if stage.type in TRAINING_STAGES:
            why = distributed.batch_refusal(spec.training_for(stage).batch_size, info.world_size,
                                            f"{source}: stage {stage.name}")
            if why:
                raise PresetError(why)


def allowed_archs(values: list[str]) -> list[str]:
    from engine.trust import arch_names

    try:
        return arch_names(values)
    except ValueError as e:
        raise PresetError(str(e)) from None


def prepare_run_dir(path: Path, spec: Any, is_main: bool = True) -> None:
    """Write spec.yaml (signed as this user's, see engine/trust.py) and a queued status."""
    from engine.runs import RunWriter
    from engine.trust import sign_spec

    if not is_main:
        return
    (path / "spec.yaml").write_text(spec.to_yaml())
    sign_spec(path)
    RunWriter(path).status(state="queued", preset=spec.name, progress=0.0)


def shared_run_dir(runs_dir: Path, name: str, info: Any, device: str = "auto") -> Path:
    """Under torchrun all ranks must agree on one directory: rank 0 creates it and broadcasts."""
    import torch.distributed as dist

    from engine import distributed, runs
    from engine.train import resolve_device

    # the run's process group, on the run's device (nccl for GPUs, gloo for a CPU run on a GPU machine)
    distributed.init(info, resolve_device(device, info))
    box = [str(runs.create_run_dir(runs_dir, name)) if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def run_existing(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="slimlab run", description="Execute a prepared run directory (used by the workbench).")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--plain", action="store_true")
    add_trust_arguments(p)
    args = p.parse_args(argv)
    return execute(args.run_dir, resume=args.resume, plain=True if args.plain else None, trust=args.trust,
                   allow_archs=allowed_archs(args.allow_arch))


def run_trust(path: Path | None, spec: Any, *, trust: bool, allow_archs: list[str], fresh: bool) -> Any:
    """What this run may build and unpickle (engine/trust.py).

    A fresh run's spec is the preset the user just gave; a run directory's spec.yaml counts as
    the user's only when signed by them, otherwise its module:Class names need --allow-arch."""
    from engine import trust as trust_rule
    from engine.errors import NeedsTrust

    base = (trust_rule.Trust.everything() if trust else trust_rule.Trust()).allowing(*allow_archs)
    if fresh or (path is not None and trust_rule.spec_signed(path)):
        return trust_rule.from_spec(spec, base)
    missing = [a for a in trust_rule.spec_archs(spec) if not base.permits_arch(a)]
    if missing:
        flags = " ".join(f"--allow-arch {a}" for a in missing)
        raise NeedsTrust(
            f"{path / 'spec.yaml'} names {', '.join(missing)}, and it was not written by this user's slimlab "
            f"(a copied run directory, or an edited spec.yaml): building a package.module:Class runs its code. "
            f"If you trust it, name it: add {flags} (or --trust)",
            kind="arch", arch=missing[0], source=str(path / "spec.yaml"), names=missing,
        )
    return base


def execute(path: Path, *, resume: bool, plain: bool | None, trust: bool = False,
            allow_archs: list[str] = (), spec: Any = None, checked: bool = False, overrides: list[str] = (),
            world_size_change: bool = False) -> int:
    """Run the spec in `path` (or `spec`, a fresh run's validated preset); maps outcomes to exit codes."""
    from engine import config, distributed, runs
    from engine.pipeline import Pipeline
    from engine.progress import make_reporter
    from engine.train import StopFlag

    fresh = spec is not None
    if spec is None:
        spec_path = path / "spec.yaml"
        if not spec_path.exists():
            raise PresetError(f"{path}: not a run directory (no spec.yaml)")
        spec = config.load_preset(spec_path)
    allowed = run_trust(path, spec, trust=trust, allow_archs=list(allow_archs), fresh=fresh)
    info = distributed.from_env()
    hint = resume_command(path, info, trust=trust, allow_archs=list(allow_archs))
    stop = StopFlag()
    previous_handlers = install_signal_handlers(stop, repeat_stops_now=not info.enabled)
    reporter = make_reporter(True if plain else None) if info.is_main else None
    if reporter is None:
        from engine.train import NullReporter

        reporter = NullReporter()
    lock = runs.RunLock(path) if info.is_main else None
    pipeline = None
    try:
        if lock is not None:
            lock.acquire()  # for the whole run: a second writer is refused with this pid
        if resume and not check_world_size(path, info, hint, world_size_change):
            return ExitCode.USAGE
        if overrides:
            spec, allowed = apply_resume_settings(path, spec, list(overrides), allowed, info.is_main)
        if resume and info.enabled and spec.task == "detect":
            check_detect_world(spec, info, str(path / "spec.yaml"))
        pipeline = Pipeline(spec, path, reporter=reporter, stop=stop, dist_info=info, trust=allowed, checked=checked)
        distributed.init(info, pipeline.device)
        reporter_msg(reporter, f"run {path}")
        pipeline.run(resume=resume)
        if pipeline.nothing_to_do:
            reporter_msg(reporter, f"{path}: every stage is done already; nothing to resume")
            return ExitCode.OK
        show_summary(reporter, path)
        reporter_msg(reporter, f"done: {path}")
        return ExitCode.OK
    except RunBusy as e:  # nothing was written
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except (Cancelled, KeyboardInterrupt) as e:
        reporter_msg(reporter, f"cancelled ({e or 'interrupt'}); resume with: {hint}")
        leave_together(info)
        return ExitCode.INTERRUPTED
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"run directory: {path} (after fixing it, resume with: {hint} --set KEY=VALUE)", file=sys.stderr)
        return ExitCode.USAGE
    except SlimlabError as e:
        print(f"error: {e}", file=sys.stderr)
        fix = "".join(f" --set {item}" for item in getattr(e, "settings", []))
        print(f"run directory: {path} (resume with: {hint}{fix})", file=sys.stderr)
        return ExitCode.FAILED
    except OSError as e:  # a write that failed: the disk, not the run
        from engine.atomic import describe_os_error

        print(f"error: {describe_os_error(e, path)}", file=sys.stderr)
        print(f"run directory: {path} (resume with: {hint})", file=sys.stderr)
        return ExitCode.FAILED
    finally:
        if hasattr(reporter, "close"):
            reporter.close()
        pipeline = None  # it holds the DDP model, which holds the process group: see distributed.shutdown
        distributed.shutdown()
        if lock is not None:
            lock.release()
        if not info.enabled:
            for sig, old in previous_handlers.items():
                signal.signal(sig, old)
        else:
            # torchrun sends SIGTERM to the ranks still running as soon as the first one exits, and a
            # rank whose work is done must not die of it. Its own handler is not enough: Python puts
            # the default handlers back while the interpreter shuts down (SIG_IGN it leaves alone).
            for sig in previous_handlers:
                signal.signal(sig, signal.SIG_IGN)


def leave_together(info: Any) -> None:
    """A cancelled torchrun run: every rank stopped at the same batch (or after the same stage); they exit
    together, once rank 0 has written last.pt, so that none is still at work when the first one's exit
    makes torchrun stop the rest."""
    from engine import distributed

    try:
        distributed.barrier(info)
    except RuntimeError:  # a rank that is gone already: nothing to wait for
        pass


def check_world_size(path: Path, info: Any, hint: str, accept: bool) -> bool:
    """A resume continues with the world size the run was started with, unless the user accepts the
    change (--world-size-change), which the log records. False: refused, with what to run instead."""
    from engine import resume as on_disk
    from engine import runs

    found = on_disk.read_status(path)
    refusal = on_disk.world_size_refusal(path, found, info.world_size, hint)
    if refusal is None:
        return True
    if not accept:
        if info.is_main:
            print(f"error: {refusal}", file=sys.stderr)
        return False
    if info.is_main:
        runs.RunWriter(path).log(f"resume: world size {on_disk.started_world_size(found)} -> {info.world_size} "
                                 "(--world-size-change): results differ from an uninterrupted run")
    return True


def apply_resume_settings(path: Path, spec: Any, overrides: list[str], allowed: Any, is_main: bool) -> tuple[Any, Any]:
    """`--resume RUN --set KEY=VALUE`: settings that are safe to change (engine/resume.py), written to
    spec.yaml (signed again when it was the user's) and said in the log. Returns the new spec and trust."""
    import yaml

    from engine import config, runs
    from engine import resume as on_disk
    from engine import trust as trust_rule
    from engine.atomic import atomic_file
    from engine.pipeline import expand_rounds

    spec_path = path / "spec.yaml"
    data = yaml.safe_load(spec_path.read_text())
    expanded = expand_rounds(spec)
    saved = on_disk.saved_state(path, expanded)
    changes, named = [], []
    for item in overrides:
        parts, value = config.parse_override(item)
        why = on_disk.check_resume_setting(parts, spec, expanded, saved)
        if why:
            raise PresetError(f"--set {item}: {why}")
        old = config.value_at(data, parts)
        config.apply_override(data, parts, value, item)
        changes.append(f"{'.'.join(parts)}={value!r} (was {old!r})")
        named += [v for v in (value if isinstance(value, list) else [value]) if trust_rule.is_module_class(v)]
    new = config.spec_from_dict(data, source=f"{spec_path} with --set", base_dir=path)
    signed = trust_rule.spec_signed(path)
    if is_main:
        with atomic_file(spec_path, "w") as f:
            f.write(new.to_yaml())
        if signed:  # the user's spec, changed by the user
            trust_rule.sign_spec(path)
        runs.RunWriter(path).log("resume with --set " + "; ".join(changes))
    return new, allowed.allowing(*named)


def resume_command(path: Path, info: Any, *, trust: bool = False, allow_archs: list[str] = ()) -> str:
    """The command that continues this run as it was started (same torchrun world size, same trust)."""
    launcher = (f"torchrun --nproc_per_node {info.world_size} -m engine" if info.enabled else "slimlab")
    flags = "".join(f" --allow-arch {a}" for a in allow_archs) + (" --trust" if trust else "")
    return f"{launcher} --batch --resume {path}{flags}"


def show_summary(reporter: Any, path: Path) -> None:
    summary = path / "summary.json"
    if hasattr(reporter, "summary") and summary.exists():
        import json

        rows = json.loads(summary.read_text()).get("comparison")
        if rows:
            reporter.summary(rows)


def reporter_msg(reporter: Any, text: str) -> None:
    if hasattr(reporter, "message"):
        reporter.message(text)


def install_signal_handlers(stop: Any, repeat_stops_now: bool = True) -> dict[int, Any]:
    """First SIGINT/SIGTERM: stop at the next step boundary. A second SIGINT: stop now.

    Under torchrun (`repeat_stops_now` False) every stop waits for the step boundary, which all
    ranks reach together: torchrun passes a Ctrl-C on to its workers, so each gets a second
    SIGINT at once, and a rank leaving in the middle of a collective would fail the others.
    Returns the handlers it replaced (execute puts them back when the run ends)."""

    def handler(signum: int, frame: Any) -> None:
        if stop.requested and signum == signal.SIGINT and repeat_stops_now:
            raise KeyboardInterrupt
        stop.request(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return previous
