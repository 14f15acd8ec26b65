"""How a headless run reports progress: rich bars on a terminal, plain lines when piped."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class PlainReporter:
    """One line per epoch and at most one progress line every few seconds: readable in CI logs."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0):
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self._last = 0.0

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stage_progress(self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        self.message(f"[{stage}] epoch {epoch + 1}/{epochs} batch {batch}/{batches} loss {loss:.4f}")

    def epoch_done(self, stage: str, m: dict[str, Any]) -> None:
        extra = f" gamma<1e-2 {m['gamma_lt_1e-2']:.1%}" if "gamma_lt_1e-2" in m else ""
        if "mAP50_95" in m:  # detection: Ultralytics' losses and validation figures
            self.message(
                f"[{stage}] epoch {m['epoch'] + 1} box {m.get('box_loss', 0):.4f} cls {m.get('cls_loss', 0):.4f} "
                f"dfl {m.get('dfl_loss', 0):.4f} P {m.get('precision', 0):.3f} R {m.get('recall', 0):.3f} "
                f"mAP50 {m.get('mAP50', 0):.4f} mAP50-95 {m['mAP50_95']:.4f} ({m.get('epoch_time', 0):.1f}s){extra}"
            )
            return
        self.message(
            f"[{stage}] epoch {m['epoch'] + 1} loss {m['loss']:.4f} val_loss {m['val_loss']:.4f} "
            f"accuracy {m['accuracy']:.2%} ({m.get('epoch_time', 0):.1f}s){extra}"
        )

    def summary(self, rows: dict[str, dict[str, Any]]) -> None:
        """The stages side by side at the end of a run."""
        if _is_detection(rows):
            lines = [f"{'stage':<16} {'mAP50':>7} {'mAP50-95':>9} {'params':>12} {'FLOPs':>14} {'latency b1':>11}"]
            for name, r in rows.items():
                lines.append(f"{name:<16} {_map(r.get('mAP50')):>7} {_map(r.get('mAP50_95')):>9} {_num(r.get('params')):>12} "
                             f"{_num(r.get('flops')):>14} {_ms(r.get('latency_b1_ms')):>11}")
            self.message("\n".join(lines))
            return
        lines = [f"{'stage':<16} {'accuracy':>9} {'params':>12} {'FLOPs':>14} {'latency b1':>11}"]
        for name, r in rows.items():
            lines.append(f"{name:<16} {_pct(r.get('accuracy')):>9} {_num(r.get('params')):>12} "
                         f"{_num(r.get('flops')):>14} {_ms(r.get('latency_b1_ms')):>11}")
        self.message("\n".join(lines))

    def close(self) -> None:
        pass


def _is_detection(rows: dict[str, dict[str, Any]]) -> bool:
    return any("mAP50_95" in r for r in rows.values())


def _map(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _num(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"


class RichReporter(PlainReporter):
    """A live progress bar per stage (only when stdout is a terminal)."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.tasks: dict[str, Any] = {}
        self.batches: dict[str, int] = {}

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def stage_progress(self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float) -> None:
        total = max(1, epochs * batches)
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, info="")
        self.progress.update(self.tasks[stage], completed=epoch * batches + batch, total=total,
                             info=f"epoch {epoch + 1}/{epochs} loss {loss:.4f}")
        self.batches[stage] = batches

    def epoch_done(self, stage: str, m: dict[str, Any]) -> None:
        super().epoch_done(stage, m)
        if stage in self.tasks:  # log points fall inside epochs; the bar should end full
            self.progress.update(self.tasks[stage], completed=(m["epoch"] + 1) * self.batches[stage])

    def summary(self, rows: dict[str, dict[str, Any]]) -> None:
        from rich.table import Table

        t = Table(title="stages", title_justify="left")
        detection = _is_detection(rows)
        cols = ("stage", "mAP50", "mAP50-95") if detection else ("stage", "accuracy")
        for col in (*cols, "params", "FLOPs", "latency b1"):
            t.add_column(col, justify="left" if col == "stage" else "right")
        for name, r in rows.items():
            quality = (_map(r.get("mAP50")), _map(r.get("mAP50_95"))) if detection else (_pct(r.get("accuracy")),)
            t.add_row(name, *quality, _num(r.get("params")), _num(r.get("flops")), _ms(r.get("latency_b1_ms")))
        self.progress.console.print(t)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(plain: bool | None = None) -> PlainReporter:
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainReporter() if plain else RichReporter()
