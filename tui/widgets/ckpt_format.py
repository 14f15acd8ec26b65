"""Short text for numbers and paths, shared by the browser and the inspector (no numpy: the
browser is on the first frame)."""

from __future__ import annotations

from pathlib import Path


def display_path(path: Path) -> str:
    """Relative to the working directory when below it: shorter, and the same on every machine."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def arch_label(arch: dict) -> str:
    """name(kwargs) with structured values abbreviated: a detector's kwargs hold its whole model
    yaml and class names, which would fill the line."""

    def short(v: object) -> str:
        if isinstance(v, dict):
            return "{…}"
        if isinstance(v, list | tuple) and len(v) > 4:
            return f"[{len(v)} items]"
        return str(v)

    kwargs = ", ".join(f"{k}={short(v)}" for k, v in (arch.get("kwargs") or {}).items())
    return f"{arch.get('name', '?')}({kwargs})" if kwargs else str(arch.get("name", "?"))


def fmt_count(n: float | None) -> str:
    """1234567 -> 1.23M; parameter and FLOP counts."""
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def fmt_size(n: int | None) -> str:
    """Bytes as B / KiB / MiB / GiB; "-" when unknown."""
    if n is None:
        return "-"
    if not n:
        return "0 B"
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
