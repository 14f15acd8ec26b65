"""The deployable artifacts side by side, as the headless run prints them at the end."""

from __future__ import annotations

from typing import Any

COLUMNS = ("artifact", "format", "accuracy", "params", "FLOPs", "size", "ms b1", "ms b32", "speed-up")
NOTE_SPARSE = ("unstructured sparsity (the sparse-* rows) shrinks the file, not the time: dense CPU inference "
               "still multiplies every zero")


def is_artifact(row: dict[str, Any]) -> bool:
    return isinstance(row, dict) and "format" in row


def split(rows: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(stage rows, artifact rows) of summary.json's comparison."""
    stages = {k: v for k, v in rows.items() if not is_artifact(v)}
    return stages, {k: v for k, v in rows.items() if is_artifact(v)}


def title(rows: dict[str, dict[str, Any]]) -> str:
    threads = next((r.get("threads") for r in rows.values() if r.get("threads")), None)
    return (f"deployable artifacts: onnxruntime on the CPU, {threads} thread{'s' if threads != 1 else ''}, "
            "median latency at batch 1 and 32; speed-up at batch 32 vs the first row")


def cells(rows: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Table cells per artifact; speed-up is relative to the first artifact at batch 32."""
    base = next(iter(rows.values())).get("latency_b32_ms") if rows else None
    out = []
    for name, r in rows.items():
        b32 = r.get("latency_b32_ms")
        speed = f"{base / b32:.2f}x" if base and b32 else "-"
        out.append([name, str(r.get("format", "-")), _pct(r.get("accuracy")), _num(r.get("params")),
                    _num(r.get("flops")), _size(r.get("size")), _ms(r.get("latency_b1_ms")), _ms(b32), speed])
    return out


def lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The plain-text table (for piped output and logs)."""
    body = cells(rows)
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
    fmt = [f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    out = [title(rows), "  ".join(f.format(c) for f, c in zip(fmt, COLUMNS, strict=True))]
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
    for i, col in enumerate(COLUMNS):
        t.add_column(col, justify="left" if i < 2 else "right")
    for r in cells(rows):
        t.add_row(*r)
    return [t, NOTE_SPARSE] if _has_sparse(rows) else [t]


def _has_sparse(rows: dict[str, dict[str, Any]]) -> bool:
    return any(str(r.get("format", "")).startswith("sparse") for r in rows.values())


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _num(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _size(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"
