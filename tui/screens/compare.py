"""Compare: chosen runs side by side per stage (summary.json) and their sweep curves (sweep.json).

Deployable files (ONNX, INT8, compressed) get a row each, with their onnxruntime latency from
summary.json's comparison once the run has timed them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, SelectionList, Static

from engine import runs
from tui.screens.base import WorkbenchScreen
from tui.widgets.plots import Line, MetricPlot

METRICS = (
    ("accuracy", "accuracy"),
    ("mAP50_95", "mAP50-95"),  # detection runs: Ultralytics' validator, 0..1
    ("mAP50", "mAP50"),
    ("params", "params"),
    ("flops", "FLOPs"),
    ("latency_b1_ms", "latency b1"),
    ("latency_b8_ms", "latency b8"),  # detection files: timed at batch 1 and 8
    ("latency_b32_ms", "latency b32"),
    ("size", "size"),
)


HIGHER_IS_BETTER = ("accuracy", "mAP50_95", "mAP50")
SWEEP_METRICS = (("accuracy", "accuracy %"), ("mAP50_95", "mAP50-95 %"))  # classifiers, detectors


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def fmt_metric(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if key == "accuracy":
        return f"{100 * value:.2f}%"
    if key.startswith("mAP"):  # Ultralytics' 0..1 figures, as its own tables print them
        return f"{value:.4f}"
    if key.startswith("latency"):
        return f"{value:.2f} ms"
    if key == "size":
        return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 1024:.0f} KiB"
    return _si(value)


@dataclass
class RunResults:
    """What compare reads from one run directory; errors say why a file could not be used."""

    path: Path
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep_rows: list[dict[str, Any]] = field(default_factory=list)
    sweep_stage: str | None = None
    errors: list[str] = field(default_factory=list)


def read_results(path: Path) -> RunResults:
    out = RunResults(path)
    try:
        summary = runs.read_json(path / "summary.json")
        if not isinstance(summary, dict):
            raise ValueError("not an object")
        out.summary = {k: v for k, v in summary.items() if isinstance(v, dict)}
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        out.errors.append(f"summary.json unreadable ({e})")
    try:
        sweep = runs.read_json(path / "sweep.json")
        rows = sweep.get("rows") if isinstance(sweep, dict) else None
        if not isinstance(rows, list):
            raise ValueError("no rows")
        out.sweep_rows = [r for r in rows if isinstance(r, dict)]
        out.sweep_stage = sweep.get("stage")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as e:
        out.errors.append(f"sweep.json unreadable ({e})")
    return out


def table_rows(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows of the table: the stages, then one per deployable file ("export.onnx · fp32").

    A file's figures come from `comparison` (with latency) when the run has finished, else
    from its stage's `artifacts` record."""
    rows = {k: v for k, v in summary.items() if k != "comparison" and "artifacts" not in v}
    compared = summary.get("comparison", {})
    files = {k: v for k, v in compared.items() if isinstance(v, dict) and "format" in v}
    for stage in summary.values():
        for record in stage.get("artifacts") or []:
            if isinstance(record, dict) and record.get("name") not in files:
                files[str(record.get("name"))] = record
    for name, row in files.items():
        rows[f"{name} · {row.get('format')}"] = row
    return rows


def sweep_metric(rows: list[dict[str, Any]]) -> str:
    """The figure a sweep measured: accuracy for a classifier, mAP50-95 for a detector."""
    for key, _label in SWEEP_METRICS:
        if any(isinstance(r.get(key), int | float) for r in rows):
            return key
    return "accuracy"


def sweep_line(name: str, rows: list[dict[str, Any]]) -> Line:
    key = sweep_metric(rows)
    points = sorted(
        (100 * r["ratio"], 100 * r[key]) for r in rows
        if isinstance(r.get("ratio"), int | float) and isinstance(r.get(key), int | float)
    )
    return Line(name, [p[0] for p in points], [p[1] for p in points])


def sweep_title(runs_rows: list[list[dict[str, Any]]]) -> str:
    labels = dict(SWEEP_METRICS)
    found = [labels[k] for k in labels if any(sweep_metric(rows) == k for rows in runs_rows)]
    return "sweep: " + (" / ".join(found) if found else "accuracy %")


class CompareScreen(WorkbenchScreen):
    """Pick runs on the left (space); the table and the sweep plot follow the selection."""

    MODE = "compare"
    NAME = "5 Compare"

    REFRESH_S = 5.0

    DEFAULT_CSS = """
    CompareScreen #compare-body { height: 1fr; }
    CompareScreen #compare-runs { width: 24; height: 1fr; border: round $panel; }
    CompareScreen #compare-right { width: 1fr; }
    CompareScreen #compare-table { height: 1fr; }
    CompareScreen #compare-plot { height: 1fr; }
    CompareScreen #compare-note { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [
        Binding("a", "select_all", "Select all", id="compare.select_all"),
        Binding("x", "clear_selection", "Select none", id="compare.clear"),
        Binding("r", "reload", "Reload", id="compare.reload"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.results: dict[str, RunResults] = {}
        self._stamps: dict[str, tuple] = {}

    @property
    def runs_dir(self) -> Path:
        return Path(getattr(self.app, "runs_dir", None) or "runs")

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="compare-body"):
            yield SelectionList[str](id="compare-runs")
            with Vertical(id="compare-right"):
                yield DataTable(id="compare-table", zebra_stripes=True, cursor_type="row")
                yield MetricPlot("sweep: accuracy %", "channels removed %",
                                 empty="no sweep.json in the selected runs", id="compare-plot")
                yield Static("", id="compare-note")

    def on_mount(self) -> None:
        self.query_one("#compare-runs", SelectionList).border_title = "runs (space)"
        self.set_interval(self.REFRESH_S, self._tick, name="compare-refresh")
        self.reload_runs()
        picker = self.query_one("#compare-runs", SelectionList)
        if picker.option_count == 1 and not picker.selected:
            # one run to compare: its stages are what the user came for, without a key press first
            picker.select(picker.get_option_at_index(0))
        self.show_selected()

    def on_screen_resume(self) -> None:
        self.reload_runs()

    def _tick(self) -> None:
        if self.is_current:
            self.reload_runs()

    def reload_runs(self) -> None:
        """Add runs that appeared since; the selection and the cursor stay put."""
        picker = self.query_one("#compare-runs", SelectionList)
        known = {str(picker.get_option_at_index(i).value) for i in range(picker.option_count)}
        for info in runs.list_runs(self.runs_dir):
            if str(info.path) not in known and info.state != "unreadable":
                picker.add_option((escape(info.name), str(info.path)))
        if picker.highlighted is None and picker.option_count:
            picker.highlighted = 0
        if self._changed_on_disk():
            self.show_selected()

    def _changed_on_disk(self) -> bool:
        """A selected run finished a stage or a sweep since we last read it."""
        changed = False
        for key in self.selected_paths():
            stamp = _stamp(Path(key))
            if self._stamps.get(key) != stamp:
                changed = True
        return changed

    def selected_paths(self) -> list[str]:
        return list(self.query_one("#compare-runs", SelectionList).selected)

    @on(SelectionList.SelectedChanged, "#compare-runs")
    def _selection_changed(self) -> None:
        self.show_selected()

    def show_selected(self) -> None:
        keys = self.selected_paths()
        for key in keys:
            stamp = _stamp(Path(key))
            if key not in self.results or self._stamps.get(key) != stamp:
                self.results[key] = read_results(Path(key))
                self._stamps[key] = stamp
        chosen = [self.results[k] for k in keys]
        self._fill_table(chosen)
        self._fill_plot(chosen)
        notes = [f"{r.path.name}: {e}" for r in chosen for e in r.errors]
        if not keys:
            notes = ["Select runs with space (a: all, x: none)."]
        elif not any(r.summary for r in chosen):
            notes.append("No summary.json yet in the selected runs: a stage writes one when it finishes.")
        self.query_one("#compare-note", Static).update(escape("\n".join(notes)))

    def _fill_table(self, chosen: list[RunResults]) -> None:
        table = self.query_one("#compare-table", DataTable)
        table.clear(columns=True)
        table.add_column("stage", key="stage")
        table.add_column("metric", key="metric")
        names = _unique_names([r.path.name for r in chosen])
        for name in names:
            table.add_column(name, key=f"run:{name}")
        rows = [table_rows(r.summary) for r in chosen]
        stages: list[str] = []
        for r in rows:
            stages += [s for s in r if s not in stages]
        for stage in stages:
            first = True  # the stage is named on its first row shown (a detector has no accuracy row)
            for key, label in METRICS:
                values = [r.get(stage, {}).get(key) for r in rows]
                if all(v is None for v in values):
                    continue
                best = _best(key, values)
                cells = [Text(fmt_metric(key, v), style="bold" if best is not None and v == best and len(chosen) > 1 else "",
                              justify="right") for v in values]
                table.add_row(stage if first else "", label, *cells)
                first = False

    def _fill_plot(self, chosen: list[RunResults]) -> None:
        names = _unique_names([r.path.name for r in chosen])
        lines = [sweep_line(name, r.sweep_rows) for name, r in zip(names, chosen, strict=True) if r.sweep_rows]
        title = sweep_title([r.sweep_rows for r in chosen if r.sweep_rows])
        self.query_one("#compare-plot", MetricPlot).show_lines(lines, title=title)

    # ------------------------------------------------------------ actions

    def action_select_all(self) -> None:
        self.query_one("#compare-runs", SelectionList).select_all()

    def action_clear_selection(self) -> None:
        self.query_one("#compare-runs", SelectionList).deselect_all()

    def action_reload(self) -> None:
        self._stamps.clear()
        self.reload_runs()
        self.show_selected()


def _stamp(path: Path) -> tuple:
    out = []
    for name in ("summary.json", "sweep.json"):
        try:
            st = os.stat(path / name)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _best(key: str, values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    return max(numbers) if key in HIGHER_IS_BETTER else min(numbers)


def _unique_names(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in out:
            candidate, n = f"{name} ({n})", n + 1
        out.append(candidate)
    return out
