"""A directory tree showing only checkpoints (and ONNX files) and the directories that lead to them.

Filtering runs in DirectoryTree's loader thread; a directory is kept when it is a run
directory (it has a status.json) or holds a checkpoint within a few levels. The scan skips
hidden, cache and virtualenv directories and stops after a bounded number of entries, so a
large working directory stays quick to open.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DirectoryTree
from textual.widgets.directory_tree import DirEntry
from textual.widgets.tree import TreeNode

from engine.runs import RunInfo, read_run
from engine.sniff import CHECKPOINT_SUFFIXES, ONNX_SUFFIX
from tui.widgets.filter_bar import matches
from tui.widgets.run_tail import raw_status, run_fraction

SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages", ".git", ".venv", "venv"}
SCAN_DEPTH = 4
SCAN_BUDGET = 5000
LISTED_SUFFIXES = (*CHECKPOINT_SUFFIXES, ONNX_SUFFIX)

STATE_STYLES = {
    "running": "bold green",
    "queued": "cyan",
    "done": "blue",
    "failed": "bold red",
    "cancelled": "yellow",
    "unreadable": "bold red",
}


def is_checkpoint(path: Path) -> bool:
    return path.suffix.lower() in CHECKPOINT_SUFFIXES


def is_onnx(path: Path) -> bool:
    return path.suffix.lower() == ONNX_SUFFIX


def is_run_dir(path: Path) -> bool:
    return (path / "status.json").is_file()


def holds_checkpoints(path: Path, depth: int = SCAN_DEPTH, budget: int = SCAN_BUDGET,
                      match: Callable[[str], bool] | None = None) -> bool:
    """True when a checkpoint (or a run directory) lies within `depth` levels below `path`;
    with `match`, only one whose file name (or run directory name) matches counts.

    When the scan runs out of budget before deciding, the directory is shown: hiding a
    directory that does hold checkpoints would be worse than showing an empty one.
    """
    level = [path]
    seen = 0
    for _ in range(depth):
        below: list[Path] = []
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > budget:
                            return True
                        name = entry.name
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if not (name.startswith(".") or name in SKIP_DIRS):
                                    below.append(Path(entry.path))
                            elif name.lower().endswith(LISTED_SUFFIXES):
                                if match is None or match(name):
                                    return True
                            elif name == "status.json" and (match is None or match(Path(folder).name)):
                                return True
                        except OSError:
                            continue
            except OSError:
                continue
        if not below:
            return False
        level = below
    return False


class CheckpointTree(DirectoryTree):
    """DirectoryTree of checkpoints; run directories carry their state after their name."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Inspect / expand", id="checkpoints.tree.select"),
    ]
    # One-cell icons: emoji are two cells wide in some terminals and one in others (tmux), which
    # shifts everything drawn after them on the row.
    ICON_NODE = "▸ "
    ICON_NODE_EXPANDED = "▾ "
    ICON_FILE = "· "

    def __init__(self, path: str | Path, *, id: str | None = None) -> None:
        super().__init__(path, id=id)
        self.runs: dict[Path, RunInfo] = {}  # resolved run directory -> its status
        self.filter_text = ""
        self._mtimes: dict[Path, int] = {}  # expanded directory -> its mtime when last compared

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return self._shown_paths(paths, record_runs=True)

    def _shown_paths(self, paths: Iterable[Path], record_runs: bool) -> list[Path]:
        """The paths of a listing the tree shows; `record_runs` keeps each run's status for its label."""
        kept: list[Path] = []
        for path in paths:
            if path.name.startswith(".") or path.name in SKIP_DIRS:
                continue
            try:
                if path.is_dir():
                    if is_run_dir(path):
                        if self._wanted(path, path.name):
                            if record_runs:
                                self.runs[path] = read_run(path)
                            kept.append(path)
                    elif holds_checkpoints(path, match=None if self._wanted(path, path.name) else self._match()):
                        kept.append(path)  # a folder shown under a filter shows all it holds
                elif (is_checkpoint(path) or is_onnx(path)) and self._wanted(path, path.name):
                    kept.append(path)
            except OSError:
                continue
        return kept

    def open_dirs(self) -> list[tuple[Path, frozenset[str]]]:
        """Every expanded, loaded directory with the names shown under it (for `stale_dirs`)."""
        out: list[tuple[Path, frozenset[str]]] = []
        todo = [self.root]
        while todo:
            node = todo.pop()
            if node.data is None or not node.is_expanded or not node.data.loaded:
                continue
            out.append((node.data.path, frozenset(c.data.path.name for c in node.children if c.data is not None)))
            todo.extend(node.children)
        return out

    def node_at_path(self, path: Path) -> TreeNode[DirEntry] | None:
        """The shown node of `path`, if it is in the tree."""
        todo = [self.root]
        while todo:
            node = todo.pop()
            if node.data is not None and node.data.path == path:
                return node
            todo.extend(node.children)
        return None

    def stale_dirs(self, dirs: list[tuple[Path, frozenset[str]]]) -> list[Path]:
        """The directories of `dirs` whose listing no longer matches what is shown: a run wrote
        its first checkpoint, a new run folder appeared, a file was deleted. Runs in a thread;
        a directory is listed again only when its mtime moved since the last look."""
        stale: list[Path] = []
        for path, shown in dirs:
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue  # gone: its parent's listing changes too
            if self._mtimes.get(path) == mtime:
                continue
            self._mtimes[path] = mtime
            try:
                names = {p.name for p in self._shown_paths(list(path.iterdir()), record_runs=False)}
            except OSError:
                continue
            if names != shown:
                stale.append(path)
        return stale

    def _match(self) -> Callable[[str], bool] | None:
        text = self.filter_text
        return (lambda name: matches(text, name)) if text else None

    def _wanted(self, path: Path, name: str) -> bool:
        """Under the filter: the name matches, or a folder above it (below the root) does."""
        if not self.filter_text:
            return True
        root = Path(self.path)
        above = [p for p in path.parents if p != root and root in p.parents]
        return any(matches(self.filter_text, p.name) for p in [path, *above])

    def set_filter(self, text: str) -> None:
        """Show only checkpoints and runs whose name matches `text` (and the folders leading there)."""
        if text == self.filter_text:
            return
        self.filter_text = text
        self.runs.clear()
        self.reload()

    def run_info(self, path: Path) -> RunInfo | None:
        return self.runs.get(path) or self.runs.get(path.resolve())

    def render_label(self, node: TreeNode[DirEntry], base_style: Style, style: Style) -> Text:
        label = super().render_label(node, base_style, style)
        if node.data is None:
            return label
        if node.is_root and not node.data.path.name:
            label.append(str(node.data.path))  # "." has no name of its own
        info = self.runs.get(node.data.path)
        if info is not None:
            label.append_text(run_label(info))
        return label


def run_label(info: RunInfo) -> Text:
    """A run's state after its name: progress of the whole run and the metric of the model it hands on
    (status.json's headline: the latest stage that is not a control), each labelled."""
    text = Text()
    status = raw_status(info)
    text.append(f"  {info.state}", style=STATE_STYLES.get(info.state, "dim"))
    if info.state in ("running", "queued", "failed", "cancelled"):
        text.append(f" {100 * run_fraction(info, status):.0f}%", style="dim")
    best = info.best_accuracy
    mean_ap = status.get("best_mAP50_95")
    if isinstance(best, (int, float)) and not isinstance(best, bool):
        text.append(f" · acc {100 * best:.1f}%", style="dim")
    elif isinstance(mean_ap, (int, float)) and not isinstance(mean_ap, bool):
        text.append(f" · mAP50-95 {mean_ap:.3f}", style="dim")
    return text
