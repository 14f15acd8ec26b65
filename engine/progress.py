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
        self.message(detect_epoch_line(stage, m) if "mAP50_95" in m else epoch_line(stage, m))

    def sweep_curve(self, stage: str, rows: list[dict[str, Any]]) -> None:
        from engine.slim.report import sweep_table

        self.message("\n".join(sweep_table(stage, rows)))

    def summary(self, rows: dict[str, dict[str, Any]]) -> None:
        """The stages side by side at the end of a run, then the deployable artifacts."""
        from engine.deploy import table as deploy_table

        rows, artifacts = deploy_table.split(rows)
        if rows:  # a run of deploy stages only (from a checkpoint) has artifacts and no stage rows
            cols = summary_columns(rows)
            table = summary_table(rows, cols)
            widths = [max(len(c), *(len(r[i]) for r in table)) + 1 for i, c in enumerate(cols)]
            lines = ["".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True)))]
            for r in table:
                lines.append("".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))
            self.message("\n".join(lines))
            said = verdict(rows)
            if said:
                self.message(said)
        if artifacts:
            self.message("\n".join(deploy_table.lines(artifacts)))

    def close(self) -> None:
        pass


def _is_detection(rows: dict[str, dict[str, Any]]) -> bool:
    return any("mAP50_95" in r for r in rows.values())


def _map(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def detect_epoch_line(stage: str, m: dict[str, Any]) -> str:
    """A detection epoch: the losses (Ultralytics' box/cls/dfl or the YOLOv5 repository's box/obj/cls, and the KD terms), its validation figures, and what a
    sparse stage adds (pruned-at-target mAP50-95, s, the share of small gammas)."""
    losses = " ".join(f"{label} {m[key]:.4f}" for key, label in
                      (("box_loss", "box"), ("obj_loss", "obj"), ("cls_loss", "cls"), ("dfl_loss", "dfl"), ("kd_loss", "kd"),
                       ("feat_loss", "feat")) if isinstance(m.get(key), int | float))
    line = (f"[{stage}] epoch {m['epoch'] + 1} {losses} P {m.get('precision', 0):.3f} R {m.get('recall', 0):.3f} "
            f"mAP50 {m.get('mAP50', 0):.4f} mAP50-95 {m['mAP50_95']:.4f}")
    if "mAP50_95_pruned_at_target" in m:
        line += f" pruned-at-target {m['mAP50_95_pruned_at_target']:.4f}"
    if "s" in m:
        line += f" s {m['s']:.2g}"
    if "gamma_rel_lt_1e-2" in m:
        line += f" gamma<1%init {m['gamma_rel_lt_1e-2']:.1%}"
    elif "gamma_lt_1e-2" in m:
        line += f" gamma<1e-2 {m['gamma_lt_1e-2']:.1%}"
    return line + f" ({m.get('epoch_time', 0):.1f}s)"


def epoch_line(stage: str, m: dict[str, Any]) -> str:
    """One epoch in one line: losses, accuracy, and what a sparse stage adds (pruned-at-target
    accuracy, s, the fraction of gammas below 1% of their initial value)."""
    line = (f"[{stage}] epoch {m['epoch'] + 1} loss {m['loss']:.4f} val_loss {m['val_loss']:.4f} "
            f"accuracy {m['accuracy']:.2%}")
    if "acc_pruned_at_target" in m:
        line += f" pruned-at-target {m['acc_pruned_at_target']:.2%}"
    if "s" in m:
        line += f" s {m['s']:.2g}"
    if "gamma_rel_lt_1e-2" in m:
        line += f" gamma<1%init {m['gamma_rel_lt_1e-2']:.1%}"
    elif "gamma_lt_1e-2" in m:
        line += f" gamma<1e-2 {m['gamma_lt_1e-2']:.1%}"
    return line + f" ({m.get('epoch_time', 0):.1f}s)"


def summary_columns(rows: dict[str, dict[str, Any]]) -> list[str]:
    cols = ["stage", "mAP50", "mAP50-95"] if _is_detection(rows) else ["stage", "accuracy"]
    cols.append("Δ vs baseline")
    if any(r.get("test_accuracy") is not None for r in rows.values()):
        cols += ["test accuracy", "Δ test"]
    return cols + ["params", "FLOPs", "% removed (params/FLOPs)", "latency b1"]


def summary_table(rows: dict[str, dict[str, Any]], cols: list[str]) -> list[list[str]]:
    """Cells of the final table. The baseline is the first stage (normally the trained, unpruned
    model); Δ is in points of accuracy (of mAP50-95 for detection), % removed is relative to the
    baseline's params and FLOPs."""
    base = next(iter(rows.values()), {})
    quality = "mAP50_95" if _is_detection(rows) else "accuracy"
    out = []
    for name, r in rows.items():
        cells = {
            "stage": name,
            "accuracy": _pct(r.get("accuracy")),
            "mAP50": _map(r.get("mAP50")),
            "mAP50-95": _map(r.get("mAP50_95")),
            "Δ vs baseline": _delta(r.get(quality), base.get(quality)),
            "test accuracy": _pct(r.get("test_accuracy")),
            "Δ test": _delta(r.get("test_accuracy"), base.get("test_accuracy")),
            "params": _num(r.get("params")),
            "FLOPs": _num(r.get("flops")),
            "% removed (params/FLOPs)": f"{_removed(r.get('params'), base.get('params'))} / "
                                        f"{_removed(r.get('flops'), base.get('flops'))}",
            "latency b1": _ms(r.get("latency_b1_ms")),
        }
        out.append([cells[c] for c in cols])
    return out


def verdict(rows: dict[str, dict[str, Any]]) -> str | None:
    """Which arm won, in words: the run's model (the last stage that is not a control) against its
    controls, on test accuracy (val accuracy when a row has no test figure). None without controls."""
    controls = {k: r for k, r in rows.items() if r.get("control")}
    models = [k for k, r in rows.items() if not r.get("control")]
    if not controls or not models or _is_detection(rows):
        return None
    name = models[-1]
    arms = {name: rows[name], **controls}
    key = "test_accuracy" if all(r.get("test_accuracy") is not None for r in arms.values()) else "accuracy"
    if any(r.get(key) is None for r in arms.values()):
        return None
    split = "test" if key == "test_accuracy" else "val"
    ranked = sorted(arms, key=lambda k: arms[k][key], reverse=True)
    figures = ", ".join(f"{k} {arms[k][key]:.2%}" for k in ranked)
    top = [k for k in ranked if arms[k][key] == arms[ranked[0]][key]]
    if len(top) > 1:
        return f"on {split} accuracy {' and '.join(top)} tie ({figures})"
    if ranked[0] == name:
        return f"on {split} accuracy the slimmed model {name} won against its controls ({figures})"
    return (f"on {split} accuracy the control {ranked[0]} won: training that architecture from scratch beat "
            f"the slimmed model {name} ({figures})")


def _delta(v: float | None, base: float | None) -> str:
    return "-" if v is None or base is None else f"{(v - base) * 100:+.2f}"


def _removed(v: float | None, base: float | None) -> str:
    return "-" if v is None or not base else f"{1 - v / base:.1%}"


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

    def sweep_curve(self, stage: str, rows: list[dict[str, Any]]) -> None:
        from rich.text import Text

        from engine.slim.report import sweep_plot, sweep_table

        if len(rows) >= 3:
            width = max(40, min(100, self.console.width))
            self.progress.console.print(Text.from_ansi(sweep_plot(stage, rows, width=width)))
        self.message("\n".join(sweep_table(stage, rows)))

    def summary(self, rows: dict[str, dict[str, Any]]) -> None:
        from rich.table import Table

        from engine.deploy import table as deploy_table

        rows, artifacts = deploy_table.split(rows)
        if rows:
            t = Table(title="stages", title_justify="left")
            cols = summary_columns(rows)
            for col in cols:
                t.add_column(col, justify="left" if col == "stage" else "right")
            for cells in summary_table(rows, cols):
                t.add_row(*cells)
            self.progress.console.print(t)
            said = verdict(rows)
            if said:
                self.progress.console.print(said, highlight=False)
        for part in deploy_table.rich(artifacts):
            self.progress.console.print(part, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(plain: bool | None = None) -> PlainReporter:
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainReporter() if plain else RichReporter()
