"""Below 80x24 the workbench shows one message instead of squeezed, broken widgets."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Middle
from textual.screen import Screen
from textual.widgets import Static

MIN_WIDTH, MIN_HEIGHT = 80, 24


def too_small(width: int, height: int) -> bool:
    return width < MIN_WIDTH or height < MIN_HEIGHT


class TooSmallScreen(Screen):
    """Pushed by the app while the terminal is too small; dismisses itself once it is not."""

    BINDINGS = [Binding("q", "app.quit", "Quit", id="too_small.quit")]
    DEFAULT_CSS = """
    TooSmallScreen { align: center middle; }
    TooSmallScreen Static { width: auto; text-align: center; }
    """

    def compose(self) -> ComposeResult:
        with Middle(), Center():
            yield Static("", id="too-small-text")

    def on_mount(self) -> None:
        self._show()

    def on_resize(self) -> None:
        self._show()

    def on_screen_resume(self) -> None:
        self._show()

    def _show(self) -> None:
        width, height = self.app.size
        if not too_small(width, height):
            if self.app.screen is self:
                self.dismiss()
            return
        self.query_one("#too-small-text", Static).update(
            f"terminal too small (need {MIN_WIDTH}x{MIN_HEIGHT})\n"
            f"this one is {width}x{height}: enlarge the window\nq quits")
