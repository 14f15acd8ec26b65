"""The inspector's table of coupled channel groups: what each keeps under the current plan.

Rows are built once per model; a new plan only rewrites the cells whose values changed, so a
key press costs a handful of cell updates rather than a table rebuild.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui.widgets.filter_bar import matches
from tui.widgets.histogram import fmt_gamma
from tui.widgets.inspector_state import GroupGammas, fmt_override, group_name
from tui.widgets.table_cells import set_cell

COLUMNS = (
    ("group", "group"),
    ("channels", "channels"),
    ("kept", "kept"),
    ("removed", "% removed"),
    ("min", "min |γ|"),
    ("median", "median"),
    ("max", "max |γ|"),
    ("flag", "flag"),
)


def flag_of(group: Any) -> Text:
    if group.ignored:
        return Text("fixed", style="dim")
    parts = []
    if group.clamped:
        parts.append(Text("clamped", style="bold yellow"))
    if group.override:
        parts.append(Text(fmt_override(group.override), style="cyan"))
    return Text(" ").join(parts) if parts else Text("")


class GroupTable(DataTable):
    """One row per coupled group, in model order; row keys are the group ids."""

    DEFAULT_CSS = """
    GroupTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: dict[int, tuple[Any, ...]] = {}
        self.order: list[int] = []  # group ids of the rows shown, top to bottom
        self.filter_text = ""
        self._groups: list[Any] = []
        self._gammas: dict[int, GroupGammas] = {}
        self._all: list[int] = []  # every group id, in model order

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def populate(self, groups: list[Any], gammas: dict[int, GroupGammas], order: list[int]) -> None:
        """Fill the rows for a newly loaded model (static columns included)."""
        self._groups, self._gammas, self._all = list(groups), gammas, list(order)
        self._fill()

    def set_filter(self, text: str) -> None:
        """Show only the groups with a layer whose name matches `text` (then show_plan again)."""
        self.filter_text = text
        self._fill()

    def _fill(self) -> None:
        self.clear()
        self._shown = {}
        by_id = {g.id: g for g in self._groups}
        order = [gid for gid in self._all
                 if matches(self.filter_text, *by_id[gid].layers, *by_id[gid].convs, by_id[gid].root)]
        self.order = order
        for gid in order:
            g, s = by_id[gid], self._gammas[gid]
            self.add_row(
                Text(group_name(g)), Text(str(g.total * getattr(g, "width", 1)), justify="right"), Text("", justify="right"),
                Text("", justify="right"), Text(fmt_gamma(s.min), justify="right"),
                Text(fmt_gamma(s.median), justify="right"), Text(fmt_gamma(s.max), justify="right"),
                Text(""), key=str(gid),
            )

    def show_plan(self, plan: Any) -> None:
        """Update kept / % removed / flag of the groups whose values changed."""
        shown = set(self.order)
        for g in plan.groups:
            if g.id not in shown:
                continue
            key = str(g.id)
            removed = 100.0 * (g.total - g.kept) / g.total if g.total else 0.0
            state = (g.kept, g.clamped, g.ignored, tuple(sorted((g.override or {}).items())))
            if self._shown.get(g.id) == state:
                continue
            self._shown[g.id] = state
            style = "bold red" if g.kept < g.total else ""
            kept = g.kept * getattr(g, "width", 1)  # a unit is `width` channels (grouped convs, even splits)
            set_cell(self, key, "kept", Text(str(kept), style=style, justify="right"))
            set_cell(self, key, "removed", Text(f"{removed:.1f}", style=style, justify="right"))
            set_cell(self, key, "flag", flag_of(g))

    def selected_group(self) -> int | None:
        if not self.row_count:
            return None
        row = self.cursor_row
        if not 0 <= row < len(self.order):
            return None
        return self.order[row]
