"""Start, cancel and resume runs as OS processes that outlive the workbench.

A run is `python -m engine run DIR --plain` in its own session, so closing the TUI (or a
Ctrl+C in it) never reaches it; a later TUI finds it again by reading run directories.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import runs
from engine.errors import SlimlabError

# Processes started by this workbench, so they are reaped (no zombies that look alive to
# `pid_alive`) and can be signalled before they have written their own pid.
_children: dict[Path, subprocess.Popen] = {}
_lock = threading.Lock()


@dataclass
class Launched:
    path: Path
    pid: int


class LaunchError(SlimlabError):
    """A run that could not be started, cancelled or resumed as asked."""


def launch(spec: Any, runs_dir: Path, name: str | None = None) -> Launched:
    """Create the run directory for a validated RunSpec and start it."""
    from engine.cli import prepare_run_dir

    path = runs.create_run_dir(Path(runs_dir), name or spec.output.name or spec.name)
    prepare_run_dir(path, spec)
    return Launched(path, _spawn(path, resume=False))


def resume(path: Path, allow_archs: tuple[str, ...] = ()) -> Launched:
    """Continue a failed or cancelled run from its last good state.

    Raises NeedsTrust (kind "arch") when the run's spec.yaml was not written by this user and
    names a package.module:Class not in `allow_archs`: the caller asks, then passes it."""
    holder = runs.lock_holder(path)  # the rule the engine applies: one writer per run directory
    if holder is not None:
        who = f"pid {holder}" if holder else "another process"
        raise LaunchError(f"{path.name} is being written by {who} right now; cancel it first (c), then resume")
    info = runs.read_run(path)
    if info.state not in ("failed", "cancelled", "unreadable"):  # unreadable: resume rebuilds its status
        raise LaunchError(f"{path.name} is {info.state}; only failed or cancelled runs resume")
    if not (path / "spec.yaml").exists():
        raise LaunchError(f"{path.name} has no spec.yaml to resume from")
    if _running_child(path) is not None:
        raise LaunchError(f"{path.name} is still shutting down; try again in a moment")
    from engine import resume as on_disk

    refusal = on_disk.world_size_refusal(path, on_disk.read_status(path), 1, f"slimlab --batch --resume {path}")
    if refusal is not None:  # the workbench runs one process; a torchrun run resumes under torchrun
        raise LaunchError(refusal)
    check_spec_trust(path, allow_archs)
    return Launched(path, _spawn(path, resume=True, allow_archs=allow_archs))


def check_spec_trust(path: Path, allow_archs: tuple[str, ...]) -> None:
    """The same rule as `slimlab --batch --resume`: a copied run's module:Class needs a yes."""
    from engine import config
    from engine.errors import NeedsTrust
    from engine.trust import Trust, unsigned_archs

    spec = config.load_preset(path / "spec.yaml")
    missing = unsigned_archs(path, spec, Trust().allowing(*allow_archs))
    if not missing:
        return
    arch = missing[0]
    models = [spec.model] + [s.model for s in spec.stages if getattr(s, "model", None) is not None]
    kwargs = next((m.kwargs for m in models if m.arch == arch), {})
    raise NeedsTrust(
        f"{path.name}/spec.yaml was not written by you (a copied run directory, or an edited spec.yaml) and names "
        f"{arch}: resuming builds it, which runs its code.",
        kind="arch", arch=arch, kwargs=kwargs, source=str(path / "spec.yaml"), names=missing,
    )


def cancel(path: Path) -> str:
    """SIGTERM the run's process: it stops at the next step boundary and writes last.pt."""
    child = _running_child(path)
    info = runs.read_run(path)
    if child is not None:
        # Ours: signal the process itself, which works even before it has written its pid.
        child.send_signal(signal.SIGTERM)
        return f"cancelling {path.name}: it stops at the next step and writes last.pt"
    if info.state != "running":
        raise LaunchError(f"{path.name} is {info.state}, not running")
    # prepare_run_dir writes the launcher's own pid while queued; never signal ourselves.
    if not info.pid or info.pid == os.getpid() or not runs.pid_alive(info.pid):
        raise LaunchError(f"{path.name}: no live process to cancel (pid {info.pid})")
    try:
        os.kill(info.pid, signal.SIGTERM)
    except OSError as e:
        raise LaunchError(f"{path.name}: cannot signal pid {info.pid} ({e.strerror})") from None
    return f"cancelling {path.name}: it stops at the next step and writes last.pt"


def is_live(path: Path) -> bool:
    """A process is (or may be about to start) writing this run directory."""
    if _running_child(path) is not None or runs.lock_holder(path) is not None:  # the run-directory lock
        return True
    info = runs.read_run(path)
    # queued: the pid is the launcher's until the run's own process writes its pid
    return info.state in ("running", "queued") and runs.pid_alive(info.pid) and info.pid != os.getpid()


def delete(path: Path) -> None:
    """Remove a run directory that no process is writing."""
    if is_live(path):
        raise LaunchError(f"{path.name} is still running; cancel it first")
    if not (path / "status.json").is_file() and not (path / "spec.yaml").is_file():
        raise LaunchError(f"{path} does not look like a run directory (no status.json or spec.yaml); not deleting it")
    shutil.rmtree(path)


def children() -> dict[Path, int]:
    """Runs this process started that are still going (path -> pid)."""
    with _lock:
        return {p: c.pid for p, c in _children.items() if c.poll() is None}


def _running_child(path: Path) -> subprocess.Popen | None:
    with _lock:
        child = _children.get(path)
    return child if child is not None and child.poll() is None else None


def _spawn(path: Path, *, resume: bool, allow_archs: tuple[str, ...] = ()) -> int:
    cmd = [sys.executable, "-m", "engine", "run", str(path), "--plain"] + (["--resume"] if resume else [])
    cmd += [arg for a in allow_archs for arg in ("--allow-arch", a)]
    out = open(path / "stdout.txt", "ab")  # noqa: SIM115 - owned by the child from here on
    try:
        child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        out.close()
    with _lock:
        _children[path] = child
    threading.Thread(target=_reap, args=(path, child), name=f"slimlab-reap-{child.pid}", daemon=True).start()
    return child.pid


def _reap(path: Path, child: subprocess.Popen) -> None:
    """Wait for the child; if it died before writing a final state, record why."""
    code = child.wait()
    with _lock:
        if _children.get(path) is child:
            del _children[path]
    info = runs.read_run(path)
    if info.state not in ("queued", "running"):
        return
    if code < 0:
        reason = f"process stopped by {signal.Signals(-code).name} before writing a final status"
    else:
        reason = f"process exited with code {code} before writing a final status"
    tail = _tail(path / "stdout.txt")
    runs.RunWriter(path).status(
        state="cancelled" if code == -signal.SIGTERM else "failed",
        ended=time.time(), error=reason + (f": {tail}" if tail else ""),
    )


def _tail(path: Path, limit: int = 300) -> str:
    """The last non-empty line of the child's output: usually the error that stopped it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""
