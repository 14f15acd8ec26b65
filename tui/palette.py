"""Command palette provider: every action of every screen, found by its description.

Commands are read from the screens' bindings, so a key added to a screen appears here (and in
`?` help) without being listed twice. Choosing one switches to its screen and runs it there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.help import declared_bindings, key_label

Command = tuple[str, str, Callable[[], Any]]


class ActionsProvider(Provider):
    def commands(self) -> list[Command]:
        app: Any = self.app
        out: list[Command] = []
        for mode, (key, title) in app.MODE_INFO.items():
            for binding in declared_bindings(app.screen_class(mode)):
                out.append((
                    f"{title}: {binding.description}",
                    f"key {key_label(app, binding)} on screen {key}",
                    partial(app.run_in_mode, mode, binding.action),
                ))
        for binding in declared_bindings(type(app)):
            out.append((binding.description, f"key {key_label(app, binding)}", partial(app.run_action, binding.action)))
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self.commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, text=name, help=help_text)
