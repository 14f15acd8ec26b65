"""Yes/No before a checkpoint runs code: unpickling objects, or building the module:Class it names."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class TrustModal(ModalScreen[bool]):
    """Dismisses with True only on an explicit yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes, load it", id="trust.yes"),
        Binding("n,escape", "answer(False)", "No", id="trust.no"),
    ]

    def __init__(self, path: Path, reason: str, *, arch: str | None = None, kwargs: dict | None = None) -> None:
        """`arch`/`kwargs`: the module:Class the file names (shown exactly); else the file holds pickles."""
        super().__init__(classes="modal")
        self._path, self._reason, self._arch, self._kwargs = path, reason, arch, kwargs

    def compose(self) -> ComposeResult:
        from engine.trust import describe_arch

        with Vertical(classes="modal-box"):
            if self._arch is None:
                yield Label("Unpickle this checkpoint?", classes="modal-title")
                yield Static(self._reason, classes="modal-help")
                warning = (f"Loading {self._path.name} runs Python code stored in the file. "
                           "Load it only if you trust where it came from.")
            else:
                yield Label("Build the architecture this file names?", classes="modal-title")
                yield Static(describe_arch(self._arch, self._kwargs), id="trust-arch", classes="modal-help")
                module = self._arch.partition(":")[0]
                warning = (f"{self._path.name} names this class; building it imports {module} and runs its code "
                           "with these arguments. Say yes only if you know this class and trust the file.")
            yield Static(warning, classes="modal-warning")
            with Horizontal(classes="modal-buttons"):
                yield Button("Yes, load it (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
