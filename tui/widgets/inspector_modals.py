"""Modals of the inspector: one value (threshold, percent, min_keep, round_to, a path) and a
per-layer override. Each checks its input with a callback that asks the engine, and shows the
engine's message inline instead of closing, so a bad value never reaches the screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from tui.widgets.histogram import GammaHistogram


def error_text(exc: BaseException) -> str:
    """The message to show for a rejected value: the engine's words, else the exception's."""
    from engine.errors import SlimlabError

    if isinstance(exc, (SlimlabError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class ValueModal(ModalScreen[Any]):
    """Ask for one value. `check(text)` returns the accepted result or raises with the reason."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(self, title: str, help: str, value: str, check: Callable[[str], Any]) -> None:
        super().__init__(classes="modal")
        self._title, self._help, self._value, self._check = title, help, value, check

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(self._title, classes="modal-title")
            yield Static(self._help, classes="modal-help")
            yield Input(value=self._value, id="value", select_on_focus=True)
            yield Static("", id="error", classes="modal-error")
            yield Static("enter: apply   escape: cancel", classes="modal-keys")

    @on(Input.Submitted, "#value")
    def submit(self, event: Input.Submitted) -> None:
        try:
            result = self._check(event.value)
        except Exception as exc:  # every rejection is shown, none closes the app
            self.query_one("#error", Static).update(error_text(exc))
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)


class OverrideModal(ModalScreen[Any]):
    """One group's |gamma| histogram and a per-layer rule: a threshold or a keep ratio.

    Dismisses with ("set", {kind: value}), ("clear", None) or None (cancelled).
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(
        self,
        name: str,
        values: np.ndarray,
        threshold: float | None,
        current: dict[str, float] | None,
        check: Callable[[str, str], Any],
        status: str = "",
    ) -> None:
        super().__init__(classes="modal")
        self._name, self._values, self._threshold = name, values, threshold
        self._current, self._check, self._status = current, check, status

    def compose(self) -> ComposeResult:
        kind, value = next(iter(self._current.items())) if self._current else ("threshold", None)
        with Vertical(classes="modal-box wide"):
            yield Label(f"Layer override: {self._name}", classes="modal-title")
            yield Static(self._status, classes="modal-help")
            yield GammaHistogram(title=self._name, id="layer-hist")
            with RadioSet(id="kind"):
                yield RadioButton("threshold |gamma|", value=kind == "threshold", id="kind-threshold")
                yield RadioButton("keep ratio", value=kind == "keep", id="kind-keep")
            yield Input(value="" if value is None else f"{value:g}", placeholder="e.g. 0.02 or 0.5", id="value")
            yield Static("", id="error", classes="modal-error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Clear override", id="clear", disabled=self._current is None)
                yield Button("Cancel", id="cancel")
            yield Static("enter: apply   tab: next field   escape: cancel", classes="modal-keys")

    def on_mount(self) -> None:
        hist = self.query_one("#layer-hist", GammaHistogram)
        hist.threshold = self._threshold
        hist.set_values(self._values)
        self.query_one("#value", Input).focus()

    def kind(self) -> str:
        return "keep" if self.query_one("#kind-keep", RadioButton).value else "threshold"

    @on(Input.Submitted, "#value")
    @on(Button.Pressed, "#apply")
    def apply(self) -> None:
        try:
            rule = self._check(self.kind(), self.query_one("#value", Input).value)
        except Exception as exc:
            self.query_one("#error", Static).update(error_text(exc))
            return
        self.dismiss(("set", rule))

    @on(Button.Pressed, "#clear")
    def clear(self) -> None:
        self.dismiss(("clear", None))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
