"""The slimlab workbench: five screens as Textual modes, switched with the number keys.

1 checkpoints, 2 inspector, 3 runs, 4 monitor, 5 compare. Screens are created on first use;
none of them imports torch at module level, so the first frame comes before torch loads.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from tui.help import HelpScreen
from tui.palette import ActionsProvider
from tui.screens.too_small import TooSmallScreen, too_small

# mode -> (module, class): imported when the mode is first opened or listed.
SCREEN_CLASSES: dict[str, tuple[str, str]] = {
    "checkpoints": ("tui.screens.checkpoints", "CheckpointsScreen"),
    "inspector": ("tui.screens.inspector", "InspectorScreen"),
    "runs": ("tui.screens.runs", "RunsScreen"),
    "monitor": ("tui.screens.monitor", "MonitorScreen"),
    "compare": ("tui.screens.compare", "CompareScreen"),
}


def screen_class(mode: str) -> type[Screen]:
    module, name = SCREEN_CLASSES[mode]
    return getattr(importlib.import_module(module), name)


def _factory(mode: str):
    def make() -> Screen:
        return screen_class(mode)()

    return make


def default_presets_dirs() -> list[Path]:
    return [Path("presets"), Path("~/.config/slimlab/presets").expanduser()]


class SlimlabApp(App):
    """`root_path` is what the user opened (a folder or a checkpoint), `runs_dir` where runs go."""

    TITLE = "slimlab"
    CSS_PATH = "app.tcss"
    MODE_INFO: ClassVar[dict[str, tuple[str, str]]] = {
        "checkpoints": ("1", "Checkpoints"),
        "inspector": ("2", "Inspector"),
        "runs": ("3", "Runs"),
        "monitor": ("4", "Monitor"),
        "compare": ("5", "Compare"),
    }
    SCREENS = {mode: _factory(mode) for mode in SCREEN_CLASSES}
    MODES = {mode: mode for mode in SCREEN_CLASSES}  # a mode's base screen is the installed screen of that name
    DEFAULT_MODE = "checkpoints"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS = [
        *(Binding(key, f"mode('{mode}')", title, show=False, id=f"app.mode.{mode}")
          for mode, (key, title) in MODE_INFO.items()),
        # on the screen bar of every screen, so the footers keep their room for each screen's keys
        Binding("question_mark", "help", "Help", key_display="?", show=False, id="app.help"),
        Binding("q", "quit", "Quit", show=False, id="app.quit"),
    ]

    def __init__(
        self,
        path: Path | None = None,
        runs_dir: Path = Path("runs"),
        presets_dirs: list[Path] | None = None,
    ) -> None:
        self.root_path = Path(path) if path is not None else Path.cwd()
        self.runs_dir = Path(runs_dir)
        self.presets_dirs = list(presets_dirs) if presets_dirs is not None else default_presets_dirs()
        self.start_checkpoint = self.root_path if self.root_path.is_file() else None
        if self.start_checkpoint is not None:
            self.DEFAULT_MODE = "inspector"  # opened on a checkpoint: start straight in the inspector
        super().__init__()

    def on_mount(self) -> None:
        if self.start_checkpoint is not None:
            self.get_screen("inspector").load(self.start_checkpoint)
        self.call_after_refresh(self.check_size)

    def on_resize(self) -> None:
        self.call_after_refresh(self.check_size)

    def check_size(self) -> None:
        """Below 80x24 one message covers the screens (it goes away by itself when the terminal grows)."""
        if too_small(*self.size) and not isinstance(self.screen, TooSmallScreen):
            self.push_screen(TooSmallScreen())

    @staticmethod
    def screen_class(mode: str) -> type[Screen]:
        return screen_class(mode)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While a modal is open its own keys apply: no switching away from it or quitting under it.
        if action in ("mode", "help", "quit") and isinstance(self.screen, ModalScreen):
            return False
        if action in ("mode", "help") and isinstance(self.screen, TooSmallScreen):
            return False
        return True

    def action_mode(self, mode: str) -> None:
        self.switch_mode(mode)

    async def action_quit(self) -> None:
        """Quit at once: background reads and sweeps are dropped; a prune writing a file asks first."""
        writing = any(w.group == "prune" and w.is_running for w in self.workers)

        def answered(yes: bool | None) -> None:
            if yes:
                self._quit_now()

        if writing:
            from tui.widgets.confirm import ConfirmModal

            self.push_screen(ConfirmModal("Quit while pruning?", "The pruned checkpoint is still being written; "
                                          "quitting now leaves it unwritten.", yes="Quit"), answered)
            return
        self._quit_now()

    def _quit_now(self) -> None:
        self.workers.cancel_all()
        self.exit()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def run_in_mode(self, mode: str, action: str) -> None:
        """Switch to `mode` and run one of its screen's actions (used by the command palette)."""
        await self.switch_mode(mode)
        await self.screen.run_action(action)

    # ------------------------------------------------------------ cross-screen navigation

    def open_checkpoint(self, path: Path, trust: Any = False) -> None:
        """Show `path` in the inspector (`trust`: what the user confirmed, see engine.trust.Trust)."""
        self.switch_mode("inspector")
        self.get_screen("inspector").load(Path(path), trust=trust)

    def open_run(self, path: Path) -> None:
        """Follow the run directory `path` on the monitor screen."""
        mounted = self.switch_mode("monitor")

        async def show() -> None:
            await mounted
            self.get_screen("monitor").show_run(Path(path))

        self.call_next(show)


def make_app(
    path: Path | None = None,
    runs_dir: Path = Path("runs"),
    presets_dirs: list[Path] | None = None,
) -> SlimlabApp:
    """The app as the console script builds it; tests build theirs the same way."""
    return SlimlabApp(path=path, runs_dir=runs_dir, presets_dirs=presets_dirs)
