"""Run test modules each in a pytest process of its own, a few at a time (make test-detect).

The detection tests load native runtimes (onnxruntime, OpenVINO, NNCF, ncnn with its own OpenMP)
and Ultralytics' trainers; one process running all of them died of SIGSEGV after about 40 tests
where every module alone passes, so each module gets its own process. The tests run one thread
each (tests/conftest.py), so two processes use a two-core machine where one leaves a core idle.
A module's output is printed whole when it ends, so lanes do not interleave.

    python tests/run_each.py [--jobs N] FILE... [-- PYTEST_ARGS...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed


def run(path: str, pytest_args: list[str]) -> tuple[str, int, float, str]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", *pytest_args, path],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return path, done.returncode, time.monotonic() - t0, done.stdout


def main(argv: list[str]) -> int:
    ours, _, pytest_args = (argv[: argv.index("--")], "--", argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, "", [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("files", nargs="+")
    a = p.parse_args(ours)
    failed = []
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for future in as_completed([pool.submit(run, f, pytest_args) for f in a.files]):
            path, rc, seconds, out = future.result()
            print(f"{path} ({seconds:.0f} s)\n{out}", end="" if out.endswith("\n") else "\n", flush=True)
            if rc != 0:
                failed.append(path)
    if failed:
        print("failed: " + " ".join(sorted(failed)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
