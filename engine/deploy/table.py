"""The deployable artifacts side by side, as the headless run prints them at the end."""

from __future__ import annotations

from typing import Any

NOTE_SPARSE = ("unstructured sparsity (the sparse-* rows) shrinks the file, not the time: dense CPU inference "
               "still multiplies every zero")


def is_artifact(row: dict[str, Any]) -> bool:
    return isinstance(row, dict) and "format" in row


def split(rows: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(stage rows, artifact rows) of summary.json's comparison."""
    stages = {k: v for k, v in rows.items() if not is_artifact(v)}
    return stages, {k: v for k, v in rows.items() if is_artifact(v)}


def batches(rows: dict[str, dict[str, Any]]) -> list[int]:
    """The batch sizes the files were timed at (latency_b<N>_ms keys), smallest first."""
    found = {int(k[len("latency_b"):-len("_ms")]) for r in rows.values() for k in r
             if k.startswith("latency_b") and k.endswith("_ms") and k[len("latency_b"):-len("_ms")].isdigit()}
    return sorted(found) or [1, 32]


def speedup_batch(rows: dict[str, dict[str, Any]]) -> int:
    """The batch the speed-up is read at: what the run recorded (32 for classifiers, 1 for detectors)."""
    return next((int(r["speedup_batch"]) for r in rows.values() if isinstance(r.get("speedup_batch"), int)),
                batches(rows)[-1])


def quality(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, column) of the figures that say how good each file is: a detector's mAP, else accuracy."""
    if any("mAP50_95" in r for r in rows.values()):
        return [("mAP50_95", "mAP50-95"), ("mAP50", "mAP50")]
    return [("accuracy", "accuracy")]


def columns(rows: dict[str, dict[str, Any]]) -> list[str]:
    return ["artifact", "format", *(c for _, c in quality(rows)), "params", "FLOPs", "size",
            *(f"ms b{b}" for b in batches(rows)), "speed-up"]


def runtimes(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The runtimes that timed the files, onnxruntime first (rows before this field: onnxruntime)."""
    found = {str(r.get("runtime") or "onnxruntime") for r in rows.values()}
    return sorted(found, key=lambda r: (r != "onnxruntime", r))


def title(rows: dict[str, dict[str, Any]]) -> str:
    threads = next((r.get("threads") for r in rows.values() if r.get("threads")), None)
    timed = " and ".join(map(str, batches(rows)))
    engines = runtimes(rows)
    where = engines[0] if len(engines) == 1 else f"each file in its own runtime ({', '.join(engines)})"
    return (f"deployable artifacts: {where} on the CPU, {threads} thread{'s' if threads != 1 else ''}, "
            f"median latency at batch {timed}; speed-up at batch {speedup_batch(rows)} vs the first row")


def cells(rows: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Table cells per artifact; speed-up is relative to the first artifact (the unpruned model)."""
    key = f"latency_b{speedup_batch(rows)}_ms"
    base = next(iter(rows.values())).get(key) if rows else None
    out = []
    for name, r in rows.items():
        t = r.get(key)
        speed = f"{base / t:.2f}x" if base and t else "-"
        figures = [_pct(r.get(k)) if k == "accuracy" else _map(r.get(k)) for k, _ in quality(rows)]
        out.append([name, str(r.get("format", "-")), *figures, _num(r.get("params")), _num(r.get("flops")),
                    _size(r.get("size")), *(_ms(r.get(f"latency_b{b}_ms")) for b in batches(rows)), speed])
    return out


def lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The plain-text table (for piped output and logs)."""
    body = cells(rows)
    cols = columns(rows)
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
    fmt = [f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    out = [title(rows), "  ".join(f.format(c) for f, c in zip(fmt, cols, strict=True))]
    out += ["  ".join(f.format(c) for f, c in zip(fmt, r, strict=True)) for r in body]
    if _has_sparse(rows):
        out.append(NOTE_SPARSE)
    return out


def rich(rows: dict[str, dict[str, Any]]) -> list[Any]:
    """The table (and the sparsity note) as rich renderables; nothing without artifacts."""
    if not rows:
        return []
    from rich.table import Table

    t = Table(title=title(rows), title_justify="left")
    for i, col in enumerate(columns(rows)):
        t.add_column(col, justify="left" if i < 2 else "right")
    for r in cells(rows):
        t.add_row(*r)
    return [t, NOTE_SPARSE] if _has_sparse(rows) else [t]


def _has_sparse(rows: dict[str, dict[str, Any]]) -> bool:
    return any(str(r.get("format", "")).startswith("sparse") for r in rows.values())


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _map(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _num(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _size(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"
