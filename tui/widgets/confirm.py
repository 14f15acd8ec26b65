"""Yes/No before a key destroys work (cancelling a run, overwriting a file, deleting a run).

No is the default: Enter, n and escape all answer no, so a key pressed in a hurry (or a burst
of keys arriving through tmux) never confirms anything. Only y or the Yes button does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Label, Static

from engine import runs
from tui import launcher


class ConfirmModal(ModalScreen[bool]):
    """Dismisses with True only on an explicit yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape,enter", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, message: str, yes: str = "Yes") -> None:
        super().__init__(classes="modal")
        self._title, self._message, self._yes = title, message, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="confirm-box"):
            yield Label(self._title, classes="modal-title")
            yield Static(self._message, classes="modal-help")
            with Horizontal(classes="modal-buttons"):
                yield Button(f"{self._yes} (y)", id="yes", variant="error", compact=True)
                yield Button("No (n)", id="no", variant="primary", compact=True)
            yield Static("y: yes   n, enter or escape: no", classes="modal-keys")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def yes(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def no(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


def confirm_cancel(screen: Screen, path: Path, then: Callable[[], None] | None = None) -> None:
    """Ask before cancelling the run at `path` (no is the default), then cancel it."""
    info = runs.read_run(path)
    if info.state not in ("running", "queued") and launcher.children().get(path) is None:
        screen.notify(f"{path.name} is {info.state}, not running", severity="warning", title="Cancel")
        return

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        try:
            screen.notify(launcher.cancel(path), title="Cancel")
        except launcher.LaunchError as e:
            screen.notify(str(e), severity="warning", title="Cancel")
        if then is not None:
            then()

    screen.app.push_screen(ConfirmModal(
        f"Cancel run {path.name}?",
        "It stops at the next training step and writes last.pt; R resumes it later from there.",
        yes="Cancel the run"), answered)
