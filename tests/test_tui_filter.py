"""`/` filters the checkpoints tree, the runs table and the inspector's group table by name."""

from __future__ import annotations

from pathlib import Path

from test_tui_inspector import make_checkpoint
from test_tui_runs import T0, HostApp, make_run
from textual.widgets import DataTable

from tui.app import make_app
from tui.screens.runs import RunsScreen
from tui.widgets.filter_bar import matches
from tui.widgets.inspector_modals import OverrideModal
from tui.widgets.inspector_table import GroupTable

from helpers import run_async, wait_for

SIZE = (80, 24)


def test_matching_is_by_substring_or_pattern():
    assert matches("VGG", "slim-vgg") and matches("", "anything") and not matches("resnet", "slim-vgg")
    assert matches("features.1?", "features.12") and not matches("features.1?", "features.1")


@run_async
async def test_runs_table_filter(tmp_path):
    runs_dir = tmp_path / "runs"
    for i, name in enumerate(("slim-vgg", "slim-vgg-2", "resnet-kd", "tiny")):
        make_run(runs_dir, name, "done", started=T0 + i, ended=T0 + 60 + i)
    app = HostApp(RunsScreen, runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen._order) == 4, what="rows")
        await pilot.press("slash", *"vgg")
        await wait_for(pilot, lambda: [Path(k).name for k in screen._order] == ["slim-vgg-2", "slim-vgg"], what="vgg")
        await pilot.press("enter")  # keeps the filter; the table has the focus again
        assert isinstance(screen.focused, DataTable)
        await pilot.pause(1.2)  # a refresh keeps the filter
        assert len(screen._order) == 2 and screen.selected().name == "slim-vgg-2"
        await pilot.press("slash", "ctrl+a", *"zzz")
        await wait_for(pilot, lambda: not screen._order, what="no match")
        assert "No run matches" in str(screen.query_one("#runs-detail").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(screen._order) == 4, what="all rows back")


@run_async
async def test_group_table_filter_and_override_on_a_filtered_row(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.ready, what="the model")
        table = screen.query_one("#groups", GroupTable)
        every = list(table.order)
        await pilot.press("slash", *"features.1?")
        await wait_for(pilot, lambda: table.row_count < len(every), what="the filtered rows")
        shown = [screen.plan.groups[g] for g in table.order]
        assert shown and all(any(matches("features.1?", n) for n in (*g.layers, *g.convs)) for g in shown)
        await pilot.press("left", "right")  # inside the filter field: the cursor moves, not the cut
        assert screen.settings.percent == 0.5
        await pilot.press("enter")
        assert screen.focused is table
        await pilot.press("right")
        assert screen.settings.percent == 0.51
        assert str(table.get_row(str(table.order[0]))[2]) == str(screen.plan.groups[table.order[0]].kept)
        table.move_cursor(row=1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, OverrideModal), what="the dialog")
        assert shown[1].layers[0] in str(app.screen.query_one(".modal-title").content)
        await pilot.press("escape", "slash", "escape")
        await wait_for(pilot, lambda: table.order == every, what="every group again")


@run_async
async def test_checkpoint_tree_filter(tmp_path):
    for name in ("a/model.pt", "b/epoch-3.pt", "c/deeper/epoch-9.pt"):
        make_checkpoint(tmp_path / name)
    make_run(tmp_path / "runs", "epoch-sweep", "done", ended=T0 + 5)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        tree = app.screen.tree
        await wait_for(pilot, lambda: len(tree.root.children) == 4, what="the tree")
        await pilot.press("slash", *"epoch")
        await wait_for(pilot, lambda: {c.data.path.name for c in tree.root.children} == {"b", "c", "runs"},
                       what="folders leading to matches")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(tree.root.children) == 4, what="everything again")
