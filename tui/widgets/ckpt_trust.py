"""Yes/No before unpickling a checkpoint: loading pickled objects runs code from the file."""

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

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(classes="modal")
        self._path, self._reason = path, reason

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label("Unpickle this checkpoint?", classes="modal-title")
            yield Static(self._reason, classes="modal-help")
            yield Static(
                f"Loading {self._path.name} runs Python code stored in the file. "
                "Load it only if you trust where it came from.",
                classes="modal-warning",
            )
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
