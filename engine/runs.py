"""Run directories: where a run writes, and how anyone (the workbench, a later resume) reads it back.

Layout (see DESIGN.md): spec.yaml, status.json, metrics.jsonl, log.txt, weights/, plan.json,
sweep.json, summary.json. Every JSON file is written atomically; metrics.jsonl is append-only
so readers can tail it by byte offset.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.atomic import NO_SPACE, atomic_file, write_in_place
from engine.errors import RunBusy

STATES = ("queued", "running", "done", "failed", "cancelled")
HEARTBEAT_S = 2.0
STALE_S = 30.0  # a "running" status whose heartbeat is older than this is a dead process


def write_json(path: Path, obj: Any, *, last_resort: bool = False) -> None:
    """Atomic JSON write: readers never see half a file. `last_resort`: on a full disk, overwrite
    in place rather than lose the write (status.json must not stay "running")."""
    try:
        with atomic_file(path, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
    except OSError as e:
        if not last_resort or e.errno not in NO_SPACE:
            raise
        write_in_place(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """A fresh directory `name`, `name-2`, ...: mkdir is atomic, so two runs never share one."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = runs_dir / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "weights").mkdir()
        return path
    raise RuntimeError(f"{runs_dir}: too many runs named {name}")


class RunWriter:
    """Everything a running process writes into its run directory."""

    def __init__(self, path: Path, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled  # False on DDP ranks other than 0
        self._status: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._stop_beat = threading.Event()
        if enabled and (self.path / "status.json").exists():
            try:
                self._status = read_json(self.path / "status.json")
            except (OSError, ValueError):
                self._status = {}

    @property
    def weights(self) -> Path:
        return self.path / "weights"

    def status(self, **changes: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._status.update(changes)
            self._status["pid"] = os.getpid()
            self._status["heartbeat"] = time.time()
            final = self._status.get("state") in ("failed", "cancelled", "done")
            write_json(self.path / "status.json", self._status, last_resort=final)

    def metrics(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"t": round(time.time(), 3), **record}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def drop_metrics(self, stage: str, *, after_step: int | None = None, from_epoch: int | None = None) -> int:
        """Remove the lines of `stage` that a resume redoes (all of them without a resume point),
        so readers count each step once. Rewrites metrics.jsonl atomically; returns the count."""
        if not self.enabled:
            return 0
        path = self.path / "metrics.jsonl"
        try:
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return 0
        keep = [ln for ln in lines if not _redone(ln, stage, after_step, from_epoch)]
        if len(keep) == len(lines):
            return 0
        with atomic_file(path, "wb") as f:
            f.writelines(keep)
        return len(lines) - len(keep)

    def log(self, line: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%H:%M:%S")
        with open(self.path / "log.txt", "a") as f:
            f.write(f"{stamp} {line}\n")

    def summary(self, stage: str, figures: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.path / "summary.json"
        current = read_json(path) if path.exists() else {}
        current[stage] = figures
        write_json(path, current)

    def start_heartbeat(self) -> None:
        if not self.enabled or self._beat is not None:
            return

        def beat() -> None:
            while not self._stop_beat.wait(HEARTBEAT_S):
                self.status()

        self._beat = threading.Thread(target=beat, name="slimlab-heartbeat", daemon=True)
        self._beat.start()

    def stop_heartbeat(self) -> None:
        self._stop_beat.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None


def _redone(line: bytes, stage: str, after_step: int | None, from_epoch: int | None) -> bool:
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    if not isinstance(rec, dict) or rec.get("stage") != stage:
        return False
    if after_step is None:
        return True
    if "accuracy" in rec or "val_loss" in rec:  # an epoch line
        return isinstance(rec.get("epoch"), int) and from_epoch is not None and rec["epoch"] >= from_epoch
    return isinstance(rec.get("step"), int) and rec["step"] > after_step


# ---------------------------------------------------------------- one writer per run directory


LOCK_FILE = "run.lock"
_held: dict[str, list] = {}  # run.lock paths this process holds: [fd, depth]
_held_lock = threading.Lock()


def _forget_locks_in_child() -> None:
    """A forked child (a DataLoader worker) shares the parent's lock; it drops its reference, so
    the lock goes when the run's process ends even if a child outlives it."""
    for fd, _depth in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


class RunLock:
    """The one-writer lock of a run directory: an exclusive flock on run_dir/run.lock, held for
    the whole run. The kernel drops it when the process ends, however it ends (a kill -9 too), so
    no stale lock outlives a crash. The file holds the holder's pid, for the refusal message."""

    def __init__(self, run: Path):
        self.run = Path(run)
        self.path = self.run / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        key = str(self.path.resolve())
        with _held_lock:
            if key in _held:  # this process holds it already (the CLI, then the pipeline)
                _held[key][1] += 1
                return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise RunBusy(f"{self.run}: {who} is writing this run right now; one process writes a run at a time. "
                          "Wait for it to end, or cancel it (the workbench's c key, or kill -TERM "
                          f"{pid or 'PID'}), then resume.", pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        with _held_lock:
            _held[key] = [fd, 1]

    def release(self) -> None:
        key = str(self.path.resolve())
        with _held_lock:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
        os.close(entry[0])  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def lock_holder(run: Path) -> int | None:
    """The pid writing `run` now (0 when the holder's pid is unknown), or None when nobody is."""
    if str((Path(run) / LOCK_FILE).resolve()) in _held:
        return os.getpid()
    try:
        fd = os.open(Path(run) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no slimlab process ever wrote here, or an older one
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading runs


@dataclass
class RunInfo:
    path: Path
    name: str
    state: str = "unknown"  # one of STATES, or "unreadable"
    stage: str | None = None
    progress: float = 0.0
    preset: str | None = None
    best_accuracy: float | None = None
    started: float | None = None
    ended: float | None = None
    heartbeat: float | None = None
    error: str | None = None
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the whole status.json

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        end = self.ended or (time.time() if self.state == "running" else self.heartbeat) or time.time()
        return max(0.0, end - self.started)


def read_run(path: Path) -> RunInfo:
    """Never raises: a corrupt run directory comes back as state 'unreadable' with the reason."""
    info = RunInfo(path=path, name=path.name)
    status_path = path / "status.json"
    try:
        st = read_json(status_path)
        if not isinstance(st, dict):
            raise ValueError("status.json is not an object")
    except FileNotFoundError:
        info.state, info.error = "unreadable", "no status.json"
        return info
    except (OSError, ValueError) as e:
        info.state, info.error = "unreadable", f"corrupt status.json ({e})"
        return info
    info.state = st.get("state", "unknown")
    info.stage = st.get("stage")
    info.progress = float(st.get("progress", 0.0) or 0.0)
    info.preset = st.get("preset")
    info.best_accuracy = st.get("best_accuracy")
    info.started = st.get("started")
    info.ended = st.get("ended")
    info.heartbeat = st.get("heartbeat")
    info.error = st.get("error")
    info.pid = st.get("pid")
    info.extra = st
    if info.state == "running" and _writer_gone(path, info):
        info.state, info.error = "failed", info.error or "process ended without writing a final status"
    return info


def _writer_gone(path: Path, info: RunInfo) -> bool:
    """A "running" status whose process is gone: its run.lock is free (the kernel released it
    when the process died), or, in a directory without one, a dead pid and an old heartbeat."""
    if (path / LOCK_FILE).exists():
        return lock_holder(path) is None
    return not pid_alive(info.pid) and _stale(info.heartbeat)


def _stale(heartbeat: float | None) -> bool:
    return heartbeat is None or time.time() - heartbeat > STALE_S


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(runs_dir: Path) -> list[RunInfo]:
    if not runs_dir.is_dir():
        return []
    found = [read_run(p) for p in runs_dir.iterdir() if p.is_dir() and (p / "weights").is_dir()]
    return sorted(found, key=lambda r: r.started or 0.0, reverse=True)


class MetricsTail:
    """Incremental reader of metrics.jsonl: each call returns only the new complete lines.

    A resume rewrites the file without the lines it redoes (RunWriter.drop_metrics); the tail
    notices the new file, reads it from the start and sets `rewritten`, so a reader that keeps
    what it was given starts over (each step counted once)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.bad_lines = 0
        self.rewritten = False  # set when the lines returned before are superseded
        self._inode: int | None = None

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if self._inode is not None and inode != self._inode:
                    self.offset, self.bad_lines, self.rewritten = 0, 0, True
                self._inode = inode
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []  # a line still being written
        self.offset += end + 1
        out = []
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if isinstance(rec, dict):
                out.append(rec)
            else:
                self.bad_lines += 1
        return out
