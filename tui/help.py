"""`?`: every key of the current screen and the keys that work everywhere."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static


def declared_bindings(cls: type[DOMNode]) -> list[Binding]:
    """The bindings `cls` and its slimlab base classes declare (Textual's own defaults left out)."""
    seen: set[str] = set()
    out: list[Binding] = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("tui"):
            continue
        for binding in Binding.make_bindings(klass.__dict__.get("BINDINGS", [])):
            if binding.key in seen:
                continue
            seen.add(binding.key)
            out.append(binding)
    return out


def key_label(app: App, binding: Binding) -> str:
    return binding.key_display or app.get_key_display(binding)


def global_bindings(app: App) -> list[tuple[str, str]]:
    rows = [(key_label(app, b), b.description) for b in declared_bindings(type(app))]
    rows.append((app.get_key_display(Binding(app.COMMAND_PALETTE_BINDING, "")), "Command palette: every action"))
    return rows


def binding_table(rows: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True, min_width=8)
    table.add_column()
    for key, description in rows:
        table.add_row(key, description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, screen: Screen) -> None:
        super().__init__(classes="modal")
        self._for = screen
        self.own: list[tuple[str, str]] = []  # (key, description) rows as listed
        self.everywhere: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        screen, app = self._for, self.app
        title = getattr(screen, "screen_name", None) or screen.sub_title or type(screen).__name__
        own = self.own = [(key_label(app, b), b.description) for b in declared_bindings(type(screen))]
        self.everywhere = global_bindings(app)
        with Vertical(classes="modal-box wide", id="help-box"):
            yield Label(f"Keys: {title}", classes="modal-title")
            with VerticalScroll():
                yield Static(Text("This screen", style="bold"))
                yield Static(binding_table(own) if own else Text("no keys of its own", style="dim"))
                yield Static(Text("\nEverywhere", style="bold"))
                yield Static(binding_table(self.everywhere))
                yield Static(Text(
                    "\nIn lists and tables: ↑/↓ move, enter selects, tab moves to the next pane. "
                    "The mouse works too.", style="dim"))
            yield Static("escape or ? closes", classes="modal-keys")

    def action_close(self) -> None:
        self.dismiss(None)
