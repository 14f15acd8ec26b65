"""Runs: every run directory under the runs folder, live, with launch / cancel / resume.

Runs are OS processes; this screen holds nothing about them in memory. Each second it re-reads
the run directories (in a thread), so runs started by another workbench, by `slimlab --batch`
or before this workbench was opened show up the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from engine import runs
from tui import launcher
from tui.screens.base import WorkbenchScreen
from tui.widgets.ckpt_format import fmt_size
from tui.widgets.confirm import confirm_cancel
from tui.widgets.filter_bar import FilterBar, matches
from tui.widgets.run_tail import fmt_accuracy, fmt_elapsed, fmt_map, raw_status, stage_position
from tui.widgets.table_cells import set_cell

COLUMNS = (("name", "Name"), ("preset", "Preset"), ("stage", "Stage"), ("status", "Status"),
           ("progress", "Progress"), ("best", "Accuracy"), ("elapsed", "Elapsed"))
STATE_STYLE = {"running": "bold green", "done": "", "failed": "bold red", "cancelled": "yellow",
               "unreadable": "bold red", "queued": "cyan"}
DEFAULT_PRESET_DIRS = (Path("presets"), Path("~/.config/slimlab/presets"))


def progress_cell(info: runs.RunInfo, width: int = 10) -> Text:
    if info.state in ("unreadable", "unknown"):
        return Text("-")
    frac = 1.0 if info.state == "done" else max(0.0, min(1.0, info.progress))
    filled = round(frac * width)
    bar = Text("█" * filled, style="green" if info.state in ("running", "done") else "dim")
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {100 * frac:3.0f}%")
    return bar


def row_cells(info: runs.RunInfo, bar: int = 10) -> dict[str, Text | str]:
    stage = info.stage or "-"
    pos = stage_position(raw_status(info)) if info.state != "unreadable" else None
    if pos and info.stage:
        stage = f"{info.stage} {pos[0]}/{pos[1]}"
    return {
        "name": info.name,
        "preset": info.preset or "-",
        "stage": stage,
        "status": Text(info.state, style=STATE_STYLE.get(info.state, "")),
        "progress": progress_cell(info, bar),
        "best": fmt_accuracy(info.best_accuracy) if info.best_accuracy is not None else fmt_map(raw_status(info)),
        "elapsed": fmt_elapsed(info.elapsed),
    }


def folder_size(path: Path) -> tuple[int, int]:
    """Files under `path` and their total size in bytes."""
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(root, name))
            except OSError:
                continue
            files += 1
    return files, size


def display_path(path: Path) -> str:
    """Relative to the working directory when under it, else with ~ for home: short and familiar."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        pass
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + os.sep) else text


def sort_key(info: runs.RunInfo) -> float:
    # Queued runs have no start time yet but a heartbeat from when they were prepared.
    return info.started or info.heartbeat or 0.0


class RunsScreen(WorkbenchScreen):
    """A live table of run directories."""

    MODE = "runs"
    NAME = "3 Runs"

    REFRESH_S = 1.0

    DEFAULT_CSS = """
    RunsScreen { layout: vertical; }
    RunsScreen #runs-title { height: 1; padding: 0 1; background: $boost; }
    RunsScreen #runs-table { height: 1fr; }
    RunsScreen #runs-detail { height: auto; max-height: 4; padding: 0 1; border-top: solid $panel; }
    """

    BINDINGS = [
        Binding("n", "new_run", "New run", id="runs.new"),
        Binding("c", "cancel_run", "Cancel", id="runs.cancel"),
        Binding("R", "resume_run", "Resume", id="runs.resume"),
        Binding("e", "edit_run", "Edit & relaunch", id="runs.edit"),
        Binding("d", "delete_run", "Delete", id="runs.delete"),
        Binding("slash", "filter", "Filter", key_display="/", id="runs.filter"),
        # priority: the table would otherwise take Enter and hide the key from the footer
        Binding("enter", "open_run", "Monitor", priority=True, id="runs.open"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.infos: dict[str, runs.RunInfo] = {}
        self._order: list[str] = []
        self._select_after: str | None = None
        self._found: list[runs.RunInfo] = []  # every run found, before the filter

    @property
    def runs_dir(self) -> Path:
        return Path(getattr(self.app, "runs_dir", None) or "runs")

    def compose_body(self) -> ComposeResult:
        yield Static("", id="runs-title", classes="screen-title")
        table: DataTable = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield FilterBar(id="runs-filter")
        yield Static("", id="runs-detail")

    def on_mount(self) -> None:
        self.query_one("#runs-title", Static).update(f"Runs in [b]{escape(display_path(self.runs_dir))}[/b]")
        self.set_interval(self.REFRESH_S, self._tick, name="runs-refresh")
        self.refresh_runs()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def _tick(self) -> None:
        if self.is_current:
            self.refresh_runs()

    @work(thread=True, exclusive=True, group="runs-scan", exit_on_error=False)
    def refresh_runs(self) -> None:
        found = sorted(runs.list_runs(self.runs_dir), key=sort_key, reverse=True)
        self.app.call_from_thread(self._show, found)

    # ------------------------------------------------------------ table

    def _show(self, found: list[runs.RunInfo]) -> None:
        self._found = found
        text = self.query_one("#runs-filter", FilterBar).text
        found = [r for r in found if matches(text, r.name, r.preset or "", r.state, r.stage or "")]
        table = self.query_one("#runs-table", DataTable)
        order = [str(r.path) for r in found]
        bar = 10 if self.size.width >= 100 else 5  # the whole table fits at 80 columns
        cells = {str(r.path): row_cells(r, bar) for r in found}
        self.infos = {str(r.path): r for r in found}
        if order != self._order:
            selected = self._select_after or self.selected_key()
            table.clear()
            for key in order:
                table.add_row(*cells[key].values(), key=key)
            self._order = order
            if selected in order:
                table.move_cursor(row=order.index(selected))
            if self._select_after in order:
                self._select_after = None
        else:
            for key in order:
                for col, value in cells[key].items():
                    if str(table.get_cell(key, col)) != str(value):
                        set_cell(table, key, col, value)  # "queued" -> "running" widens the column
        self._show_detail()

    def selected_key(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not self._order or table.cursor_row < 0 or table.cursor_row >= len(self._order):
            return None
        return self._order[table.cursor_row]

    def selected(self) -> runs.RunInfo | None:
        key = self.selected_key()
        return self.infos.get(key) if key else None

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#runs-detail", Static)
        info = self.selected()
        if info is None:
            text = self.query_one("#runs-filter", FilterBar).text
            if self._found and not self._order:
                detail.update(f"No run matches [b]{escape(text)}[/b] ({len(self._found)} runs): esc clears the filter")
            else:
                detail.update(f"No runs in {escape(display_path(self.runs_dir))} yet. Press [b]n[/b] to start one."
                              if not self._order else "")
            return
        style = STATE_STYLE.get(info.state, "")
        line = f"[b]{escape(info.name)}[/b]  [{style}]{info.state}[/]" if style else f"[b]{escape(info.name)}[/b]  {info.state}"
        if info.state == "running" and info.pid:
            line += f"  pid {info.pid}"
        hints = {"running": "c cancels", "failed": "R resumes, e edits and relaunches, d deletes",
                 "cancelled": "R resumes, e edits and relaunches, d deletes", "unreadable": "R resumes, d deletes",
                 "done": "e edits and relaunches, d deletes"}
        line += f"  [dim]({hints[info.state] + ', ' if info.state in hints else ''}Enter monitors)[/]"
        if info.error:
            line += f"\n[red]{escape(info.error)}[/]"
        detail.update(line)

    # ------------------------------------------------------------ filter

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Enter in the filter field keeps the filter; it does not open the monitor
        if action == "open_run" and isinstance(self.focused, Input):
            return False
        return True

    def action_filter(self) -> None:
        self.query_one("#runs-filter", FilterBar).open()

    @on(FilterBar.Changed, "#runs-filter")
    def _filtered(self) -> None:
        self._show(self._found)

    @on(FilterBar.Done, "#runs-filter")
    def _filter_done(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    # ------------------------------------------------------------ actions

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self) -> None:
        self.action_open_run()  # a mouse click on a selected row

    def action_open_run(self) -> None:
        info = self.selected()
        if info is None:
            return
        open_run = getattr(self.app, "open_run", None)
        if callable(open_run):
            open_run(info.path)
        else:
            from tui.screens.monitor import MonitorScreen

            self.app.push_screen(MonitorScreen(info.path))

    def action_new_run(self) -> None:
        from tui.screens.launch import LaunchScreen

        dirs = getattr(self.app, "presets_dirs", None) or list(DEFAULT_PRESET_DIRS)
        self.app.push_screen(LaunchScreen(list(dirs), self.runs_dir), self._launched)

    def _launched(self, path: Path | None) -> None:
        if path is not None:
            self._select_after = str(path)
            self.refresh_runs()

    def action_cancel_run(self) -> None:
        info = self.selected()
        if info is None:
            return

        def done() -> None:
            self.refresh_runs()

        confirm_cancel(self, info.path, done)

    def action_edit_run(self) -> None:
        """Clone and edit: the run's spec in the new-run form; launching makes a new run directory."""
        info = self.selected()
        if info is not None:
            self._edit(info.path, ())

    def _edit(self, path: Path, allow_archs: tuple[str, ...]) -> None:
        from engine.errors import NeedsTrust, SlimlabError
        from tui.launch_form import run_choice
        from tui.screens.launch import LaunchScreen
        from tui.widgets.ckpt_trust import TrustModal

        if not (path / "spec.yaml").is_file():
            self.notify(f"{path.name} has no spec.yaml to start from", severity="warning", title="Edit")
            return
        try:
            launcher.check_spec_trust(path, allow_archs)  # the same rule as resuming a copied run
        except NeedsTrust as e:
            arch = e.arch

            def answered(yes: bool | None) -> None:
                if yes:
                    self._edit(path, (*allow_archs, arch))

            self.app.push_screen(TrustModal(path / "spec.yaml", str(e), arch=arch, kwargs=e.kwargs), answered)
            return
        except SlimlabError:
            pass  # a spec.yaml that no longer validates: the form shows what to fix
        choice = run_choice(path)
        if choice.error:
            self.notify(f"{path.name}/spec.yaml: {choice.error}", severity="warning", title="Edit")
            return
        dirs = getattr(self.app, "presets_dirs", None) or list(DEFAULT_PRESET_DIRS)
        self.app.push_screen(LaunchScreen(list(dirs), self.runs_dir, start=choice), self._launched)

    def action_delete_run(self) -> None:
        info = self.selected()
        if info is None:
            return
        from tui.widgets.confirm import ConfirmModal

        if launcher.is_live(info.path):
            self.notify(f"{info.name} is {info.state}: cancel it first (c)", severity="warning", title="Delete")
            return
        files, size = folder_size(info.path)

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(info.path)

        self.app.push_screen(ConfirmModal(
            f"Delete run {info.name}?",
            f"Removes {display_path(info.path)} with its {files} files ({fmt_size(size)}): checkpoints, metrics "
            "and logs. This cannot be undone.", yes="Delete"), answered)

    @work(thread=True, exit_on_error=False, group="runs-delete")
    def _delete(self, path: Path) -> None:
        try:
            launcher.delete(path)
        except (OSError, launcher.LaunchError) as e:
            self.app.call_from_thread(self.notify, f"{path.name}: {e}", severity="error", title="Delete")
            return
        self.app.call_from_thread(self.notify, f"deleted {path.name}", title="Delete")
        self.app.call_from_thread(self.refresh_runs)

    def action_resume_run(self) -> None:
        info = self.selected()
        if info is not None:
            self._resume(info.path, ())

    def _resume(self, path: Path, allow_archs: tuple[str, ...]) -> None:
        from engine.errors import NeedsTrust, SlimlabError
        from tui.widgets.ckpt_trust import TrustModal

        try:
            launched = launcher.resume(path, allow_archs)
        except NeedsTrust as e:
            arch = e.arch

            def answered(yes: bool | None) -> None:
                if yes:
                    self._resume(path, (*allow_archs, arch))

            self.app.push_screen(TrustModal(path / "spec.yaml", str(e), arch=arch, kwargs=e.kwargs), answered)
            return
        except SlimlabError as e:  # LaunchError, or a spec.yaml that no longer validates
            self.notify(str(e), severity="warning", title="Resume")
            return
        self.notify(f"resuming {launched.path.name} (pid {launched.pid})", title="Resume")
        self.refresh_runs()
