"""A one-line progress row for a background job of the inspector (prune now, sweep)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class JobBar(Horizontal):
    DEFAULT_CSS = """
    JobBar { height: 1; display: none; }
    JobBar.-active { display: block; }
    JobBar > Label { width: 1fr; }
    JobBar > ProgressBar { width: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", classes="job-label")
        yield ProgressBar(total=1, show_eta=False, classes="job-progress")

    def start(self, text: str, total: int) -> None:
        self.add_class("-active")
        self.query_one(Label).update(text)
        bar = self.query_one(ProgressBar)
        bar.update(total=total, progress=0)

    def step(self, text: str, done: int, total: int | None = None) -> None:
        self.query_one(Label).update(text)
        bar = self.query_one(ProgressBar)
        if total is not None:
            bar.update(total=total)
        bar.update(progress=done)

    def finish(self) -> None:
        self.remove_class("-active")

    @property
    def running(self) -> bool:
        return self.has_class("-active")
