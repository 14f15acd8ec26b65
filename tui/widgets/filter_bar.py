"""`/` on a list: a one-line filter under it. Typing filters as you type; enter keeps the filter
and goes back to the list; escape clears it. Screens say what matches (`matches`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Static


def matches(text: str, *names: str) -> bool:
    """Case-insensitive: a substring of any name, or an fnmatch pattern when it has * ? or [."""
    needle = text.strip().lower()
    if not needle:
        return True
    if any(c in needle for c in "*?["):
        return any(fnmatch.fnmatchcase(n.lower(), needle) for n in names)
    return any(needle in n.lower() for n in names)


class FilterBar(Horizontal):
    DEFAULT_CSS = """
    FilterBar { height: 1; display: none; background: $boost; }
    FilterBar.-shown { display: block; }
    FilterBar > Label { width: auto; padding: 0 1; color: $accent; text-style: bold; }
    FilterBar > Input { width: 1fr; }
    FilterBar > Static { width: auto; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [Binding("escape", "clear", "Clear filter", show=False, id="filter.clear")]

    @dataclass
    class Changed(Message):
        bar: FilterBar
        text: str

        @property
        def control(self) -> FilterBar:
            return self.bar

    @dataclass
    class Done(Message):
        """Enter or escape: the list takes the focus back."""

        bar: FilterBar

        @property
        def control(self) -> FilterBar:
            return self.bar

    def compose(self) -> ComposeResult:
        yield Label("/")
        yield Input(placeholder="filter by name (* and ? work)", compact=True, id=f"{self.id or 'filter'}-input")
        yield Static("enter keeps · esc clears")

    @property
    def text(self) -> str:
        return self.query_one(Input).value.strip()

    @property
    def active(self) -> bool:
        return bool(self.text)

    def open(self) -> None:
        self.add_class("-shown")
        self.query_one(Input).focus()

    def action_clear(self) -> None:
        field = self.query_one(Input)
        changed = bool(field.value)
        field.value = ""
        self.remove_class("-shown")
        if changed:
            self.post_message(self.Changed(self, ""))
        self.post_message(self.Done(self))

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self, event.value.strip()))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.text:
            self.remove_class("-shown")
        self.post_message(self.Done(self))
