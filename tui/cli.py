"""Console entry point: headless commands go to the engine, everything else opens the workbench."""

from __future__ import annotations

import sys

HEADLESS = {"--batch", "inspect", "prune", "run", "-h", "--help", "--version"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HEADLESS:
        from engine.cli import main as engine_main

        return engine_main(argv)
    raise SystemExit("the workbench is not built yet")
