"""What every workbench screen shares: the screen bar on top, the screen's own widgets, and a
footer with the screen's keys (the keys that work everywhere are on the bar)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from tui.widgets.screen_bar import ScreenBar


class WorkbenchScreen(Screen):
    """Subclasses set MODE and NAME and yield their widgets from `compose_body`."""

    MODE: ClassVar[str] = ""
    NAME: ClassVar[str] = ""

    # Footer items two columns apart: a compact footer would glue "±1%" to the next key.
    DEFAULT_CSS = """
    WorkbenchScreen Footer.-compact FooterKey { margin-right: 2; }
    WorkbenchScreen Footer.-compact FooterLabel { margin: 0 2 0 0; }
    """

    def compose(self) -> ComposeResult:
        yield ScreenBar(self.MODE or None, self.NAME, id="screen-bar")
        yield from self.compose_body()
        yield Footer(compact=True, show_command_palette=False)

    def compose_body(self) -> Iterable[Widget]:
        return ()

    @property
    def screen_name(self) -> str:
        return self.NAME or type(self).__name__
