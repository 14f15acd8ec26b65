"""The bar on top of every screen: the five screens by number with the current one lit, and the
keys that work everywhere. A click on a screen's name switches to it."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import RenderResult
from textual.widget import Widget

GLOBAL_KEYS = (("?", "help"), ("^p", "actions"), ("q", "quit"))


class ScreenBar(Widget):
    DEFAULT_CSS = """
    ScreenBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, mode: str | None, title: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode  # the mode of the screen this bar is on
        self.title = title  # shown when the app has no modes (a screen hosted alone)
        self._spans: list[tuple[int, int, str]] = []  # (start, end, mode) of each name, for clicks

    def modes(self) -> dict[str, tuple[str, str]]:
        return dict(getattr(self.app, "MODE_INFO", {}) or {})

    def render(self) -> RenderResult:
        width = self.size.width
        text = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        modes = self.modes()
        if not modes:
            text.append(f" {self.title} ", "bold reverse")
        for mode, (key, name) in modes.items():
            start = text.cell_len
            if mode == self.mode:
                text.append(f" {key} {name} ", Style(bold=True, reverse=True))
            else:
                text.append(" ")
                text.append(key, "bold")
                text.append(f" {name} ", "dim")
            self._spans.append((start, text.cell_len, mode))
        keys = Text()
        for key, what in GLOBAL_KEYS:
            candidate = keys.copy()
            candidate.append(("  " if candidate else "") + key, "bold")
            candidate.append(f" {what}", "dim")
            # the palette key is the first to go when the row is short
            if key == "^p" and text.cell_len + candidate.cell_len + 2 + 8 > width:
                continue
            keys = candidate
        gap = width - text.cell_len - keys.cell_len - 1
        if gap >= 1:
            text.append(" " * gap)
            text.append_text(keys)
        text.truncate(width, overflow="ellipsis")
        return text

    def on_click(self, event: events.Click) -> None:
        for start, end, mode in self._spans:
            if start <= event.x < end and mode != self.mode:
                self.app.switch_mode(mode)
                return
