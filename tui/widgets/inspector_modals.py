"""Modals of the inspector: one value (threshold, percent, min_keep, round_to, a path) and a
per-layer override (`keep 0.5` or `thr 0.02`). Each checks its input with a callback that asks the engine, and shows the
engine's message inline instead of closing, so a bad value never reaches the screen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

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


@dataclass
class OverridePreview:
    """What a typed rule would do to the group: the plan it gives and the group's cut."""

    settings: Any
    plan: Any
    rule: dict[str, float]
    threshold: float | None
    cut: np.ndarray  # scores of the group's channels the rule cuts
    kept: int
    total: int


class OverrideModal(ModalScreen[Any]):
    """One group's |gamma| histogram and a rule for it alone: `keep 0.5` or `thr 0.02`.

    Every edit is previewed (the histogram's red part and a line saying what is kept); Enter
    applies. Dismisses with ("set", OverridePreview), ("clear", None) or None (cancelled).
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(
        self,
        name: str,
        values: np.ndarray,
        threshold: float | None,
        cut: np.ndarray,
        current: str,
        check: Callable[[str], OverridePreview],
        status: str = "",
        has_override: bool = False,
    ) -> None:
        super().__init__(classes="modal")
        self._name, self._values, self._threshold, self._cut = name, values, threshold, cut
        self._current, self._check, self._status, self._has_override = current, check, status, has_override
        self.preview: OverridePreview | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box wide", id="override-box"):
            yield Label(f"Layer override: {self._name}", classes="modal-title")
            yield Static(self._status, classes="modal-help")
            yield GammaHistogram(title=self._name, id="layer-hist")
            yield Input(value=self._current, placeholder="keep 0.5  or  thr 0.02", compact=True, id="value")
            yield Static("", id="preview", classes="modal-help")
            yield Static("", id="error", classes="modal-error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Apply", id="apply", variant="primary", compact=True)
                yield Button("Clear override", id="clear", disabled=not self._has_override, compact=True)
                yield Button("Cancel", id="cancel", compact=True)
            yield Static("keep R: keep that share of the channels · thr T: cut below |gamma| T · "
                         "a bare number is a keep ratio · enter applies · escape cancels", classes="modal-keys")

    def on_mount(self) -> None:
        hist = self.query_one("#layer-hist", GammaHistogram)
        hist.set_values(self._values)
        hist.set_cut(self._threshold, self._cut)
        field = self.query_one("#value", Input)
        field.focus()
        if field.value:
            self._show(field.value)

    @on(Input.Changed, "#value")
    def _edited(self, event: Input.Changed) -> None:
        self._show(event.value)

    def _show(self, text: str) -> OverridePreview | None:
        preview = self.query_one("#preview", Static)
        if not text.strip():
            self.preview = None
            self._error("")
            preview.update("")
            return None
        try:
            result = self._check(text)
        except Exception as exc:
            self.preview = None
            self._error(error_text(exc))
            preview.update("")
            return None
        self.preview = result
        self._error("")
        rule = describe_rule(result.rule)
        preview.update(f"→ {rule}: keeps {result.kept} of {result.total} channels")
        self.query_one("#layer-hist", GammaHistogram).set_cut(result.threshold, result.cut)
        return result

    @on(Input.Submitted, "#value")
    @on(Button.Pressed, "#apply")
    def apply(self) -> None:
        text = self.query_one("#value", Input).value
        if not text.strip():
            self._error("type a rule: keep 0.5 (keep half) or thr 0.02")
            return
        result = self._show(text)
        if result is not None:
            self.dismiss(("set", result))

    def _error(self, text: str) -> None:
        box = self.query_one("#error", Static)
        box.update(text)
        box.set_class(bool(text), "-shown")

    @on(Button.Pressed, "#clear")
    def clear(self) -> None:
        self.dismiss(("clear", None))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def describe_rule(rule: dict[str, float]) -> str:
    """{"keep": 0.5} -> 'keep 50%'; {"threshold": 0.02} -> 'thr 0.02'."""
    kind, value = next(iter(rule.items()))
    return f"keep {100 * value:g}%" if kind == "keep" else f"thr {value:g}"
