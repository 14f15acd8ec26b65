"""Console entry point: headless commands go to the engine, everything else opens the workbench.

Headless commands never import textual, so `slimlab --batch` works on a box without a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HEADLESS = {"--batch", "inspect", "prune", "export", "quantize", "run", "-h", "--help", "--version"}


def workbench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slimlab",
        description="Open the slimlab workbench on a folder of checkpoints/runs, or on one checkpoint.",
        add_help=False,  # -h/--help is the engine's overview of every command
    )
    p.add_argument("path", nargs="?", type=Path, help="folder to browse or checkpoint to inspect (default: .)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run directories live (default: runs/)")
    p.add_argument("--presets-dir", type=Path, action="append", dest="presets_dirs", metavar="DIR",
                   help="a folder of presets for the new-run picker, offered with the built-in presets, "
                        "./presets and ~/.config/slimlab/presets (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HEADLESS:
        from engine.cli import main as engine_main

        return engine_main(argv)
    args = workbench_parser().parse_args(argv)
    if args.path is not None and not args.path.exists():
        print(f"error: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    from tui.app import default_presets_dirs, make_app

    presets = (args.presets_dirs or []) + default_presets_dirs() if args.presets_dirs else None
    app = make_app(args.path, runs_dir=args.runs_dir, presets_dirs=presets)
    app.run()
    return leave(app.return_code or 0)


def leave(code: int) -> int:
    """Exit now once torch is loaded: its interpreter teardown takes seconds and saves nothing.

    By then the terminal is restored, runs are processes of their own, and every file the
    workbench wrote was written atomically and finished (quitting waits for a prune in progress).
    """
    if "torch" not in sys.modules:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
