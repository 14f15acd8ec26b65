"""Updating a DataTable cell whose new value may be wider than its column.

DataTable widens a column only when the app is idle, after the cell was already drawn (and
cached) at the old width, so a grown value stays cut ("runnin", "keep" for "keep 0.5") until
something else changes. Widening the column before the update draws it whole at once. Columns
never narrow here: that would measure every row of the column.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable


def set_cell(table: DataTable, row: str, column: str, value: str | Text) -> None:
    """`table.update_cell`, widening `column` first when `value` needs more room."""
    width = value.cell_len if isinstance(value, Text) else cell_len(str(value))
    col = table.columns[column]  # type: ignore[index]  # DataTable looks up str keys as ColumnKey
    grow = width > col.content_width
    if grow:
        col.content_width = width
    table.update_cell(row, column, value, update_width=grow)
