"""Checkpoints (1): browse checkpoints and run directories; the panel shows what each holds.

`engine.checkpoint.peek` (which imports torch) runs in a thread worker, a short moment after
the cursor settles, so the first frame never waits for torch and scrolling through a folder
does not read every file on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DirectoryTree, Static, Tree
from textual.worker import get_current_worker

from engine.runs import read_run
from tui.screens.base import WorkbenchScreen
from tui.widgets.checkpoint_panel import CheckpointPanel
from tui.widgets.ckpt_format import display_path
from tui.widgets.ckpt_tree import CheckpointTree, is_checkpoint, is_onnx, is_run_dir
from tui.widgets.filter_bar import FilterBar

PEEK_DELAY_S = 0.15
FILTER_DELAY_S = 0.25
RUN_REFRESH_S = 3.0


class CheckpointsScreen(WorkbenchScreen):
    MODE = "checkpoints"
    NAME = "1 Checkpoints"
    BINDINGS = [
        Binding("enter", "open", "Inspect / expand", id="checkpoints.open"),
        Binding("m", "monitor", "Monitor run", id="checkpoints.monitor"),
        Binding("r", "reload", "Reload", id="checkpoints.reload"),
        Binding("slash", "filter", "Filter", key_display="/", id="checkpoints.filter"),
    ]

    @dataclass
    class Peeked(Message):
        path: Path
        info: dict[str, Any]

    @dataclass
    class RunsReread(Message):
        runs: dict[Path, Any]
        stale: list[Path]  # expanded directories whose listing changed

    def __init__(self, root: Path | None = None) -> None:
        super().__init__()
        self.root = Path(root) if root is not None else None
        self._peek_timer: Timer | None = None
        self._filter_timer: Timer | None = None
        self._peeks: dict[tuple[Path, float, int], dict[str, Any]] = {}
        self.current: Path | None = None

    def compose_body(self) -> ComposeResult:
        root = self.root or getattr(self.app, "root_path", None) or Path.cwd()
        root = root if root.is_dir() else root.parent
        yield Static(Text.assemble("Checkpoints under ", (display_path(root), "bold")), id="checkpoints-title",
                     classes="screen-title")
        with Horizontal(id="checkpoints-body"):
            yield CheckpointTree(root, id="checkpoint-tree")
            yield CheckpointPanel(id="checkpoint-panel")
        yield FilterBar(id="tree-filter")

    def on_mount(self) -> None:
        # run labels follow their runs, and files a run writes appear in the tree as they land
        self.set_interval(RUN_REFRESH_S, self._refresh_runs)

    @property
    def tree(self) -> CheckpointTree:
        return self.query_one("#checkpoint-tree", CheckpointTree)

    @property
    def panel(self) -> CheckpointPanel:
        return self.query_one("#checkpoint-panel", CheckpointPanel)

    def cursor_path(self) -> Path | None:
        node = self.tree.cursor_node
        return node.data.path if node is not None and node.data is not None else None

    # ------------------------------------------------------------ the side panel

    @on(Tree.NodeHighlighted, "#checkpoint-tree")
    def highlighted(self, event: Tree.NodeHighlighted) -> None:
        data = event.node.data
        if data is None:
            return
        self.show(data.path)

    def show(self, path: Path) -> None:
        self.current = path
        if self._peek_timer is not None:
            self._peek_timer.stop()
            self._peek_timer = None
        if path.is_dir():
            info = self.tree.run_info(path)
            if info is None and is_run_dir(path):
                info = read_run(path)
            if info is not None:
                self.panel.show_run(info)
            else:
                self.panel.show_folder(path)
            return
        cached = self._peeks.get(self._key(path))
        if cached is not None:
            self.panel.show_peek(cached)
            return
        self.panel.show_reading(path)
        self._peek_timer = self.set_timer(PEEK_DELAY_S, lambda: self._peek(path))

    @staticmethod
    def _key(path: Path) -> tuple[Path, float, int]:
        try:
            st = path.stat()
        except OSError:
            return (path, 0.0, -1)
        return (path, st.st_mtime, st.st_size)

    @work(thread=True, exit_on_error=False, exclusive=True, group="peek")
    def _peek(self, path: Path) -> None:
        try:
            if is_onnx(path):
                from engine.deploy import onnxfile

                info = onnxfile.browse(path)
            else:
                from engine import checkpoint

                info = checkpoint.peek(path)
        except Exception as exc:  # peek reports readable failures itself; anything else is shown too
            try:
                size: int | None = path.stat().st_size
            except OSError:
                size = None
            info = {"path": str(path), "size": size, "error": f"{type(exc).__name__}: {exc}"}
        if not get_current_worker().is_cancelled:
            self.post_message(self.Peeked(path, info))

    def on_checkpoints_screen_peeked(self, message: Peeked) -> None:
        self._peeks[self._key(message.path)] = message.info
        if message.path == self.current:
            self.panel.show_peek(message.info)

    # ------------------------------------------------------------ actions

    @on(DirectoryTree.FileSelected, "#checkpoint-tree")
    def file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.open(event.path)

    def open(self, path: Path) -> None:
        if is_checkpoint(path):
            self.app.open_checkpoint(path)
        elif is_onnx(path):
            self.notify("An ONNX file is for onnxruntime; the inspector opens PyTorch checkpoints.", title="ONNX")

    def action_open(self) -> None:
        path = self.cursor_path()
        if path is None:
            return
        if path.is_dir():
            node = self.tree.cursor_node
            if node is not None:
                node.toggle()
            return
        self.open(path)

    def action_monitor(self) -> None:
        path = self.cursor_path()
        run = next((p for p in ([path, *path.parents] if path else []) if is_run_dir(p)), None)
        if run is None:
            self.notify("Move to a run directory (one with status.json) first.", severity="warning")
            return
        self.app.open_run(run)

    def action_reload(self) -> None:
        self._peeks.clear()
        self.tree.runs.clear()
        self.tree.reload()

    # ------------------------------------------------------------ filter

    def action_filter(self) -> None:
        self.query_one("#tree-filter", FilterBar).open()

    @on(FilterBar.Changed, "#tree-filter")
    def _filtered(self, event: FilterBar.Changed) -> None:
        # the tree rescans folders on a new filter: once typing pauses, not on every key
        if self._filter_timer is not None:
            self._filter_timer.stop()
        text = event.text
        self._filter_timer = self.set_timer(FILTER_DELAY_S, lambda: self.tree.set_filter(text))

    @on(FilterBar.Done, "#tree-filter")
    def _filter_done(self) -> None:
        self.tree.focus()

    # ------------------------------------------------------------ live run states

    def _refresh_runs(self) -> None:
        if self.app.screen is self:
            self._reread_runs(list(self.tree.runs), self.tree.open_dirs())

    @work(thread=True, exit_on_error=False, exclusive=True, group="runs")
    def _reread_runs(self, paths: list[Path], open_dirs: list[tuple[Path, frozenset[str]]]) -> None:
        stale = self.tree.stale_dirs(open_dirs)
        self.post_message(self.RunsReread({p: read_run(p) for p in paths}, stale))

    def on_checkpoints_screen_runs_reread(self, message: RunsReread) -> None:
        fresh = message.runs
        tree = self.tree
        stale = set(message.stale)
        for path in stale:  # new or removed files show without r; a reload keeps what is open
            if not any(parent in stale for parent in path.parents):
                node = tree.node_at_path(path)
                if node is not None:
                    tree.reload_node(node)
        def shown(i: Any) -> tuple:
            return (i.state, i.stage, round(i.progress, 3), i.best_accuracy, i.error)

        changed = any(tree.runs.get(p) is None or shown(tree.runs[p]) != shown(i) for p, i in fresh.items())
        tree.runs.update(fresh)
        if changed:
            tree.refresh()
            if self.current is not None and self.current in fresh:
                self.panel.show_run(fresh[self.current])
