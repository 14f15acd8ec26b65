"""Monitor: live plots, progress and log tail of one run, read from its run directory.

A timer reads what the run appended since the last tick (metrics by byte offset, log tail,
status) in a thread, then redraws only the visible plot and only if its data changed, so a
run writing hundreds of lines a second costs the workbench a couple of redraws a second.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar, RichLog, Static, TabbedContent, TabPane

from engine import runs
from tui import launcher
from tui.screens.base import WorkbenchScreen
from tui.widgets.plots import Line, MetricPlot
from tui.widgets.run_series import RunSeries
from tui.widgets.run_tail import (
    Poll,
    TextTail,
    epoch_line,
    epochs_for,
    fmt_accuracy,
    fmt_elapsed,
    merge_by_clock,
    raw_status,
    run_fraction,
    spec_stage_epochs,
    stage_position,
)

PLOTS = ("loss", "accuracy", "lr", "memory", "gamma")
LOG_LINES = 500
STATE_STYLE = {"running": "bold green", "done": "bold", "failed": "bold red", "cancelled": "bold yellow",
               "unreadable": "bold red", "queued": "cyan"}


class MonitorScreen(WorkbenchScreen):
    """Live view of one run; `show_run(path)` points it at a run directory."""

    MODE = "monitor"
    NAME = "4 Monitor"

    TICK_S = 0.5  # at most 2 redraws a second, whatever the run's logging rate

    DEFAULT_CSS = """
    MonitorScreen { layout: vertical; }
    MonitorScreen #monitor-title { height: 1; padding: 0 1; background: $boost; }
    MonitorScreen #monitor-error { height: auto; max-height: 3; padding: 0 1; color: $error; display: none; }
    MonitorScreen #monitor-error.shown { display: block; }
    MonitorScreen #monitor-bars { height: 1; padding: 0 1; }
    MonitorScreen #monitor-bars Label { width: auto; padding: 0 1 0 0; }
    MonitorScreen #monitor-bars .gap { padding: 0 1 0 2; }
    MonitorScreen #monitor-bars ProgressBar { width: 1fr; }
    MonitorScreen #monitor-bars ProgressBar Bar { width: 1fr; }
    MonitorScreen #monitor-bars PercentageStatus { width: 5; }
    MonitorScreen #monitor-plots { height: 1fr; }
    MonitorScreen #monitor-plots TabPane { padding: 0; }
    MonitorScreen #monitor-log { height: 12; border: round $panel; border-title-color: $text-muted; scrollbar-size-vertical: 1; }
    MonitorScreen.-medium #monitor-log { height: 9; }
    MonitorScreen.-short #monitor-log { height: 6; }
    """

    BINDINGS = [
        Binding("left_square_bracket", "cycle_plot(-1)", "Prev plot", id="monitor.prev_plot"),
        Binding("right_square_bracket", "cycle_plot(1)", "Next plot", id="monitor.next_plot"),
        Binding("c", "cancel_run", "Cancel run", id="monitor.cancel"),
        Binding("R", "resume_run", "Resume", id="monitor.resume"),
        Binding("escape", "back", "Back", id="monitor.back"),
    ]

    def __init__(self, path: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_path: Path | None = Path(path) if path is not None else None
        self.series = RunSeries()
        self.info: runs.RunInfo | None = None
        self.bad_lines = 0
        self._token = 0  # bumped when the run changes, so a poll for the old run is dropped
        self._tail: runs.MetricsTail | None = None
        self._log_tail: TextTail | None = None
        self._stage_epochs: dict[str, int] | None = None
        self._drawn: dict[str, int] = {}  # plot name -> series version last handed to it
        self._epochs_logged: set[tuple] = set()  # (stage, epoch, t) of the epoch lines in the log
        self._poll_lock = threading.Lock()

    def compose_body(self) -> ComposeResult:
        yield Static("", id="monitor-title", classes="screen-title")
        yield Static("", id="monitor-error")
        with Horizontal(id="monitor-bars"):
            yield Label("stage", id="stage-label")
            yield ProgressBar(total=100, show_eta=False, id="stage-bar")
            yield Label("run", id="run-label", classes="gap")
            yield ProgressBar(total=100, show_eta=False, id="run-bar")
        with TabbedContent(id="monitor-plots"):
            with TabPane("Loss", id="tab-loss"):
                yield MetricPlot("loss", "step", id="plot-loss")
            with TabPane("Accuracy", id="tab-accuracy"):
                yield MetricPlot("val accuracy %", "step", empty="accuracy appears after the first epoch", id="plot-accuracy")
            with TabPane("LR", id="tab-lr"):
                yield MetricPlot("learning rate", "step", id="plot-lr")
            with TabPane("Memory", id="tab-memory"):
                yield MetricPlot("memory MiB", "step", id="plot-memory")
            with TabPane("Gamma", id="tab-gamma"):
                yield MetricPlot("BatchNorm |gamma| sparsity", "epoch",
                                 empty="gamma sparsity appears during sparse stages", id="plot-gamma")
        yield RichLog(id="monitor-log", max_lines=LOG_LINES, wrap=False, markup=False, highlight=False)

    def on_mount(self) -> None:
        self.query_one("#monitor-log", RichLog).border_title = "log: stages and epochs"
        self.set_interval(self.TICK_S, self._tick, name="monitor-tick")
        if self.run_path is None:
            self.run_path = self._newest_running()
        self._start(self.run_path)

    def on_screen_resume(self) -> None:
        self._tick()

    def on_resize(self) -> None:
        # Small terminals give the plot the rows; tall ones show ~10 lines of log.
        height = self.size.height
        self.set_class(height < 28, "-short")
        self.set_class(28 <= height < 40, "-medium")

    # ------------------------------------------------------------ public

    def show_run(self, path: Path) -> None:
        """Watch `path` (a run directory) from its first metrics line."""
        self.run_path = Path(path)
        if self.is_mounted:
            self._start(self.run_path)

    # ------------------------------------------------------------ polling

    def _start(self, path: Path | None) -> None:
        self._token += 1
        self.series = RunSeries()
        self.info = None
        self.bad_lines = 0
        self._drawn = {}
        self._epochs_logged = set()
        self._stage_epochs = None
        self._tail = runs.MetricsTail(path / "metrics.jsonl") if path else None
        self._log_tail = TextTail(path / "log.txt") if path else None
        self.query_one("#monitor-log", RichLog).clear()
        for name in PLOTS:
            self.query_one(f"#plot-{name}", MetricPlot).show_lines([])
        if path is None:
            self.query_one("#monitor-title", Static).update(
                "No run open: choose one on the Runs screen (3) and press Enter")
            return
        self._poll(self._token, path, self._tail, self._log_tail)

    def _tick(self) -> None:
        if self.run_path is None or not self.is_current:
            return
        self._poll(self._token, self.run_path, self._tail, self._log_tail)

    @work(thread=True, exclusive=True, group="monitor-poll", exit_on_error=False)
    def _poll(self, token: int, path: Path, tail: runs.MetricsTail | None, log_tail: TextTail | None) -> None:
        # Exclusive workers are not stopped, only flagged: the lock keeps two reads off one tail.
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            poll = self._read(path, tail, log_tail)
        finally:
            self._poll_lock.release()
        self.app.call_from_thread(self._apply, token, poll)

    def _read(self, path: Path, tail: runs.MetricsTail | None, log_tail: TextTail | None) -> Poll:
        info = runs.read_run(path)
        poll = Poll(info, raw_status(info))
        if tail is not None:
            poll.records = tail.read()
            poll.bad_lines = tail.bad_lines
            poll.rewritten, tail.rewritten = tail.rewritten, False
        if log_tail is not None:
            poll.log_lines = log_tail.read()
        if self._stage_epochs is None:
            poll.stage_epochs = spec_stage_epochs(path / "spec.yaml")
        return poll

    def _apply(self, token: int, poll: Poll) -> None:
        if token != self._token:
            return
        self.info = poll.info
        self.bad_lines = poll.bad_lines
        if self._stage_epochs is None and poll.stage_epochs is not None:
            self._stage_epochs = poll.stage_epochs
        if poll.rewritten:  # a resume dropped the lines it redoes: plot the file as it is now
            self.series = RunSeries()
            self._drawn = {}
        if poll.records:
            self.series.feed(poll.records)
        self._name_accuracy_tab("mAP" if self.series.map else "Accuracy")
        epochs = []
        for rec in poll.records:
            line = epoch_line(rec, epochs_for(self._stage_epochs or {}, rec.get("stage")))
            seen = (rec.get("stage"), rec.get("epoch"), rec.get("t"))
            if line is not None and seen not in self._epochs_logged:  # a rewritten file repeats its lines
                self._epochs_logged.add(seen)
                epochs.append(line)
        if poll.log_lines or epochs:  # stage lines from log.txt, epoch lines from metrics.jsonl
            log = self.query_one("#monitor-log", RichLog)
            for line in merge_by_clock(poll.log_lines, epochs)[-LOG_LINES:]:
                log.write(Text(line))
        self._show_status(poll)
        self._draw(self._active_plot())

    # ------------------------------------------------------------ drawing

    def _show_status(self, poll: Poll) -> None:
        info, status = poll.info, poll.status
        parts = [f"[b]{_escape(info.name)}[/b]", f"[{STATE_STYLE.get(info.state, '')}]{info.state}[/]"]
        if info.stage:
            pos = stage_position(status)
            parts.append(f"stage {_escape(info.stage)}" + (f" {pos[0]}/{pos[1]}" if pos else ""))
        activity = status.get("activity")  # what a stage without epochs is doing (export, quantize ...)
        if info.state == "running" and isinstance(activity, str) and activity:
            parts.append(f"[dim]{_escape(activity)}[/]")
        epochs = epochs_for(self._stage_epochs or {}, info.stage)
        if self.series.epoch is not None and self.series.stage == info.stage and epochs:
            parts.append(f"epoch {min(self.series.epoch + 1, epochs)}/{epochs}")
        if info.best_accuracy is not None:
            parts.append(f"best {fmt_accuracy(info.best_accuracy)}")
        elif isinstance(status.get("best_mAP50_95"), int | float):  # a detection run
            parts.append(f"best mAP50-95 {status['best_mAP50_95']:.4f}")
        parts.append(fmt_elapsed(info.elapsed))
        if poll.bad_lines:
            parts.append(f"[yellow]{poll.bad_lines} bad metrics lines skipped[/]")
        self.query_one("#monitor-title", Static).update("  ".join(parts))
        error = self.query_one("#monitor-error", Static)
        if info.error and info.state in ("failed", "cancelled", "unreadable"):
            error.update(f"{info.state}: {_escape(info.error)}")
            error.add_class("shown")
        else:
            error.remove_class("shown")
        stage_done = 1.0 if info.state == "done" else info.progress
        self.query_one("#stage-bar", ProgressBar).update(progress=round(100 * stage_done, 1))
        self.query_one("#run-bar", ProgressBar).update(progress=round(100 * run_fraction(info, status), 1))

    def _name_accuracy_tab(self, label: str) -> None:
        tab = self.query_one("#monitor-plots", TabbedContent).get_tab("tab-accuracy")
        if tab.label_text != label:
            tab.label = label

    def _active_plot(self) -> str:
        active = self.query_one("#monitor-plots", TabbedContent).active or "tab-loss"
        return active.removeprefix("tab-")

    def _draw(self, name: str) -> None:
        """Hand the plot its series if they changed since it last drew (hidden plots wait)."""
        s = self.series
        version = s.versions.get(name, 0)
        if self._drawn.get(name) == version:
            return
        self._drawn[name] = version
        plot = self.query_one(f"#plot-{name}", MetricPlot)
        if name == "loss":
            stages = " > ".join(n for _, n in s.stage_marks)
            lines = [Line(s.loss.label, s.loss.xs, s.loss.ys), Line(s.val_loss.label, s.val_loss.xs, s.val_loss.ys)]
            lines += [Line(part.label, part.xs, part.ys) for part in s.loss_parts.values()]  # detection
            plot.show_lines(lines, marks=s.stage_marks, title=f"loss ({stages})" if stages else "loss")
        elif name == "accuracy" and s.map:  # a detection run: Ultralytics' mAP per epoch
            main = s.map.get("mAP50_95")
            best = max(main.ys) if main and main.ys else None
            title = f"mAP % (best mAP50-95 {best:.2f})" if best is not None else "mAP %"
            plot.show_lines([Line(m.label, m.xs, m.ys) for m in s.map.values()], marks=s.stage_marks, title=title)
        elif name == "accuracy":
            best = max(s.accuracy.ys) if s.accuracy.ys else None
            title = f"val accuracy % (best {best:.2f})" if best is not None else "val accuracy %"
            lines = [Line(s.accuracy.label, s.accuracy.xs, s.accuracy.ys)]
            if s.pruned.xs:  # sparse stages: the model cut at its target, beside the model itself
                lines.append(Line(s.pruned.label, s.pruned.xs, s.pruned.ys))
            plot.show_lines(lines, marks=s.stage_marks, title=title)
        elif name == "lr":
            plot.show_lines([Line(s.lr.label, s.lr.xs, s.lr.ys)], marks=s.stage_marks)
        elif name == "memory":
            plot.show_lines([Line(m.label, m.xs, m.ys) for m in s.memory.values()], marks=s.stage_marks)
        elif name == "gamma":
            plot.show_lines([Line(g.label, g.xs, g.ys) for g in s.gamma.values()])

    @on(TabbedContent.TabActivated, "#monitor-plots")
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self._draw(self._active_plot())

    # ------------------------------------------------------------ actions

    def action_cycle_plot(self, step: int) -> None:
        tabs = self.query_one("#monitor-plots", TabbedContent)
        names = [f"tab-{n}" for n in PLOTS]
        current = names.index(tabs.active) if tabs.active in names else 0
        tabs.active = names[(current + step) % len(names)]

    def action_cancel_run(self) -> None:
        if self.run_path is None:
            return
        from tui.widgets.confirm import confirm_cancel

        confirm_cancel(self, self.run_path, self._tick)

    def action_resume_run(self) -> None:
        if self.run_path is None:
            return
        try:
            launched = launcher.resume(self.run_path)
        except launcher.LaunchError as e:
            self.notify(str(e), severity="warning", title="Resume")
            return
        self.notify(f"resuming {launched.path.name} (pid {launched.pid})", title="Resume")
        self._tick()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1 and self.app.screen is self:
            self.app.pop_screen()
        elif "runs" in getattr(self.app, "MODES", {}):
            self.app.switch_mode("runs")

    def _newest_running(self) -> Path | None:
        runs_dir = Path(getattr(self.app, "runs_dir", "runs"))
        running = [r for r in runs.list_runs(runs_dir) if r.state == "running"]
        return running[0].path if running else None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))
