"""Inspector: the plan on screen is the engine's plan, every key changes it as documented, bad
input is refused with the engine's message, and s / x / w write or show real results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from textual.pilot import Pilot
from textual.widgets import Input, Label, Static

from engine import checkpoint
from engine.slim import PrunePlan, make_plan, precompute
from tui.app import make_app
from tui.screens.inspector import InspectorScreen
from tui.widgets.confirm import ConfirmModal
from tui.widgets.histogram import GammaHistogram
from tui.widgets.inspector_modals import OverrideModal, ValueModal
from tui.widgets.inspector_sweep import SweepPlot
from tui.widgets.inspector_table import GroupTable

from helpers import run_async, wait_for

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
SIZE = (100, 30)


def make_model(seed: int = 0) -> torch.nn.Module:
    """A small VGG whose BatchNorm gammas are fixed: about 40% near zero, the rest spread to 1."""
    torch.manual_seed(seed)
    model = checkpoint.build_model(ARCH)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.weight.numel()
                small = rng.random(n) < 0.4
                values = rng.uniform(0.001, 1.0, n) * np.where(small, 0.02, 1.0)
                m.weight.copy_(torch.tensor(values, dtype=torch.float32))
    return model.eval()


def make_checkpoint(path: Path, seed: int = 0, meta: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = meta if meta is not None else {"epoch": 3, "stage": "sparse", "metrics": {"accuracy": 0.75}}
    checkpoint.save(path, make_model(seed), ARCH, meta=meta)
    return path


async def ready_inspector(pilot: Pilot) -> InspectorScreen:
    screen = pilot.app.screen
    assert isinstance(screen, InspectorScreen)
    await wait_for(pilot, lambda: screen.ready, what="the model to load")
    await pilot.pause()
    return screen


async def type_into_modal(pilot: Pilot, text: str) -> None:
    """Replace the modal input's text and press enter."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, (ValueModal, OverrideModal)), 10, "a modal")
    field = pilot.app.screen.query_one("#value", Input)
    field.value = text
    field.focus()
    await pilot.press("enter")
    await pilot.pause()


def modal_error(pilot: Pilot) -> str:
    return str(pilot.app.screen.query_one("#error", Static).content)


def engine_plan(path: Path, **opts) -> PrunePlan:
    model = checkpoint.load(path).model
    return make_plan(precompute(model), **opts)


def kept_counts(plan: PrunePlan) -> dict[str, int]:
    return {g.root: g.kept for g in plan.groups}


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "ckpts" / "model.pt")


# ---------------------------------------------------------------- what is shown


@run_async
async def test_shows_the_engines_plan_for_the_checkpoint(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        assert screen.settings.percent == 0.5
        expected = engine_plan(ckpt, percent=0.5)
        assert screen.plan.to_dict() == expected.to_dict()
        table = screen.query_one("#groups", GroupTable)
        assert table.row_count == len(expected.groups)
        for g in expected.groups:
            row = [str(c) for c in table.get_row(str(g.id))]
            assert row[1] == str(g.total) and row[2] == str(g.kept)
            assert row[3] == f"{100 * (g.total - g.kept) / g.total:.1f}"
        summary = str(screen.query_one("#summary", Static).content)
        t = expected.totals
        assert f"channels −{t['prunable_before'] - t['prunable_after']}/{t['prunable_before']}" in summary
        assert "[p] percent 50.0%" in summary and "params 145k→" in summary and "FLOPs" in summary
        hist = screen.query_one("#histogram", GammaHistogram)
        assert hist.threshold == pytest.approx(expected.options["global_threshold"])
        assert int(hist.counts.sum()) == t["prunable_before"]


@run_async
async def test_arrow_keys_step_the_percent(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("right")
        assert screen.settings.percent == pytest.approx(0.51)
        await pilot.press("right", "right")
        assert screen.settings.percent == pytest.approx(0.53)
        await pilot.press("left")
        assert screen.settings.percent == pytest.approx(0.52)
        await pilot.press("shift+right")
        assert screen.settings.percent == pytest.approx(0.62)
        await pilot.press("shift+left", "shift+left")
        assert screen.settings.percent == pytest.approx(0.42)
        assert screen.plan.options["percent"] == pytest.approx(0.42)
        assert screen.plan.to_dict() == engine_plan(ckpt, percent=0.42).to_dict()
        hist = screen.query_one("#histogram", GammaHistogram)
        assert hist.threshold == pytest.approx(screen.plan.options["global_threshold"])
        for _ in range(8):
            await pilot.press("shift+left")
        assert screen.settings.percent == 0.0
        assert screen.plan.totals["prunable_after"] == screen.plan.totals["prunable_before"]


@run_async
async def test_l_toggles_the_log_scale(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        hist = screen.query_one("#histogram", GammaHistogram)
        assert not hist.log_scale
        await pilot.press("l")
        assert hist.log_scale
        await pilot.press("l")
        assert not hist.log_scale


# ---------------------------------------------------------------- modals


@run_async
async def test_t_sets_an_exact_threshold_and_arrows_continue_from_it(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("t")
        await type_into_modal(pilot, "0.1")
        assert pilot.app.screen is screen
        assert screen.settings.threshold == 0.1 and screen.settings.percent is None
        expected = engine_plan(ckpt, threshold=0.1)
        assert screen.plan.to_dict() == expected.to_dict()
        scores = screen.inputs.arrays().sorted_prunable
        below = float(np.mean(scores < 0.1))
        await pilot.press("right")
        assert screen.settings.percent == pytest.approx(round(below + 0.01, 4))


@run_async
async def test_bad_input_shows_the_reason_and_changes_nothing(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        before = screen.plan.to_dict()
        await pilot.press("t")
        await type_into_modal(pilot, "abc")
        assert isinstance(pilot.app.screen, ValueModal)
        assert "not a number" in modal_error(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert pilot.app.screen is screen and screen.plan.to_dict() == before

        await pilot.press("p")
        await type_into_modal(pilot, "1.5")
        assert "outside [0, 1)" in modal_error(pilot)  # the engine's words
        await type_into_modal(pilot, "30%")
        assert pilot.app.screen is screen and screen.settings.percent == pytest.approx(0.3)

        await pilot.press("k")
        await type_into_modal(pilot, "0")
        assert screen.settings.min_keep == 0
        await pilot.press("t")
        await type_into_modal(pilot, "10")
        assert isinstance(pilot.app.screen, ValueModal)
        assert "would remove every channel" in modal_error(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert screen.settings.threshold is None and screen.settings.percent == pytest.approx(0.3)

        await pilot.press("r")
        await type_into_modal(pilot, "2.5")
        assert "whole number" in modal_error(pilot)
        await type_into_modal(pilot, "0")
        assert "round_to" in modal_error(pilot)
        await pilot.press("escape")


@run_async
async def test_k_min_keep_clamps_and_warns(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("p")
        await type_into_modal(pilot, "0.9")
        await pilot.press("k")
        await type_into_modal(pilot, "6")
        assert screen.settings.min_keep == 6
        expected = engine_plan(ckpt, percent=0.9, min_keep=6)
        assert screen.plan.to_dict() == expected.to_dict()
        clamped = [g for g in screen.plan.groups if g.clamped]
        assert clamped and all(g.kept == 6 for g in clamped)
        table = screen.query_one("#groups", GroupTable)
        assert "clamped" in str(table.get_row(str(clamped[0].id))[7])
        await pilot.pause()
        shown = table.render_line(1 + table.order.index(clamped[0].id)).text  # below the header row
        assert "clamped" in shown, f"the flag is cut on screen: {shown!r}"
        assert "clamped by min_keep" in str(screen.query_one("#summary", Static).content)
        summary = str(screen.query_one("#summary", Static).content)
        removed = screen.plan.totals["prunable_before"] - screen.plan.totals["prunable_after"]
        effective = 100 * removed / screen.plan.totals["prunable_before"]
        assert f"percent 90.0%  → cuts {effective:.1f}%" in summary  # what is really cut, beside the asked
        await pilot.press("k")
        await type_into_modal(pilot, "1000")
        assert "percent 90.0%  → cuts 0.0%" in str(screen.query_one("#summary", Static).content)
        await pilot.press("k")
        await type_into_modal(pilot, "0.5")
        assert screen.settings.min_keep == 0.5
        assert all(g.kept >= math.ceil(0.5 * g.total) for g in screen.plan.groups)


@run_async
async def test_r_rounds_kept_counts(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("r")
        await type_into_modal(pilot, "8")
        assert screen.settings.round_to == 8
        assert screen.plan.to_dict() == engine_plan(ckpt, percent=0.5, round_to=8).to_dict()
        for g in screen.plan.groups:
            if not g.ignored:
                assert g.kept % 8 == 0 or g.kept == g.total


@run_async
async def test_enter_on_a_row_sets_and_clears_a_layer_override(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        table = screen.query_one("#groups", GroupTable)
        table.focus()
        table.move_cursor(row=2)
        gid = table.selected_group()
        group = screen.plan.groups[gid]
        shown = str(table.get_row(str(gid))[0])  # the name the table shows: the group's BatchNorm
        name = shown.split(" +")[0]
        assert name == group.layers[0] != group.root
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, OverrideModal), 10, "the override modal")
        modal = pilot.app.screen
        assert shown in str(modal.query_one(".modal-title", Label).content)
        assert f"A rule for {name} alone" in str(modal.query_one(".modal-help", Static).content)
        layer_hist = modal.query_one("#layer-hist", GammaHistogram)
        assert int(layer_hist.counts.sum()) == group.total
        assert layer_hist.cut_values.size == group.total - group.kept

        await type_into_modal(pilot, "keep 2")
        assert "a keep ratio is above 0 and at most 1" in modal_error(pilot)
        await type_into_modal(pilot, "half")
        assert "keep 0.5 (keep half the channels) or thr 0.02" in modal_error(pilot)
        modal.query_one("#value", Input).value = "keep 0.5"  # previewed before it is applied
        await pilot.pause()
        half = math.ceil(0.5 * group.total)
        assert f"keep 50%: keeps {half} of {group.total} channels" in str(modal.query_one("#preview", Static).content)
        assert layer_hist.cut_values.size == group.total - half
        assert screen.settings.overrides == {}

        # A bare number is a keep ratio: 0.25 keeps a quarter (not a threshold that keeps 1 channel).
        await type_into_modal(pilot, "0.25")
        assert pilot.app.screen is screen
        assert screen.settings.overrides == {name: {"keep": 0.25}}
        expected = engine_plan(ckpt, percent=0.5, overrides={name: {"keep": 0.25}})
        assert screen.plan.to_dict() == expected.to_dict()
        assert screen.plan.groups[gid].kept == math.ceil(0.25 * group.total)
        assert "keep 0.25" in str(table.get_row(str(gid))[7])
        await pilot.pause()
        line = table.render_line(1 + table.order.index(gid)).text
        assert "keep 0.25" in line, f"the flag is cut on screen: {line!r}"

        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, OverrideModal), 10, "the override modal")
        assert pilot.app.screen.query_one("#value", Input).value == "keep 0.25"
        await pilot.click("#clear")
        await pilot.pause()
        assert screen.settings.overrides == {}
        assert screen.plan.to_dict() == engine_plan(ckpt, percent=0.5).to_dict()

        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, OverrideModal), 10, "the override modal")
        await type_into_modal(pilot, "thr 0.05")
        assert screen.settings.overrides == {name: {"threshold": 0.05}}
        assert screen.plan.groups[gid].threshold == pytest.approx(0.05)
        assert "thr 0.05" in str(table.get_row(str(gid))[7])


# ---------------------------------------------------------------- s, x, w


@run_async
async def test_s_saves_the_plan_shown(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("right", "right", "right")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ValueModal), 10, "the save modal")
        default = pilot.app.screen.query_one("#value", Input).value
        assert default == str(ckpt.parent / "model.plan.json")  # named after the checkpoint
        await pilot.press("enter")
        await pilot.pause()
        saved = json.loads((ckpt.parent / "model.plan.json").read_text())
        assert saved == json.loads(json.dumps(screen.plan.to_dict()))
        assert PrunePlan.from_dict(saved).to_dict() == screen.plan.to_dict()
        assert saved["options"]["percent"] == pytest.approx(0.53)

        # A folder that does not exist is refused, not created.
        await pilot.press("s")
        other = ckpt.parent / "elsewhere" / "mine.json"
        await type_into_modal(pilot, str(other))
        assert "does not exist: create it first" in modal_error(pilot)
        assert not other.parent.exists()
        other.parent.mkdir()
        await type_into_modal(pilot, str(other))
        assert json.loads(other.read_text()) == saved

        # An existing file is overwritten only after a yes; enter answers no.
        await pilot.press("right")
        await pilot.press("s")
        await type_into_modal(pilot, str(other))
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), 10, "the overwrite question")
        assert "Overwrite" in str(pilot.app.screen.query_one(".modal-title", Label).content)
        await pilot.press("enter")
        await pilot.pause()
        assert pilot.app.screen is screen and json.loads(other.read_text()) == saved
        await pilot.press("s")
        await type_into_modal(pilot, str(other))
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), 10, "the overwrite question")
        await pilot.press("y")
        await pilot.pause()
        assert json.loads(other.read_text())["options"]["percent"] == pytest.approx(0.54)

        await pilot.press("s")
        await type_into_modal(pilot, str(ckpt.parent))
        assert "is a directory" in modal_error(pilot)
        await pilot.press("escape")


@run_async
async def test_x_writes_a_pruned_checkpoint_the_engine_rebuilds(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("left", "left")
        shown = screen.plan.to_dict()
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ValueModal), 10, "the prune modal")
        out = ckpt.with_name("model-pruned.pt")
        assert pilot.app.screen.query_one("#value", Input).value == str(out)
        await type_into_modal(pilot, str(ckpt))
        assert "being inspected" in modal_error(pilot)
        await type_into_modal(pilot, str(out))
        job = screen.query_one("#prune-job")
        await wait_for(pilot, lambda: not job.running and out.exists(), what="the pruned checkpoint")
        loaded = checkpoint.load(out)
        assert loaded.plan == json.loads(json.dumps(shown))
        assert json.loads(out.with_name("model-pruned.plan.json").read_text()) == loaded.plan
        assert not out.with_name("plan.json").exists()
        params = sum(p.numel() for p in loaded.model.parameters())
        assert params == shown["totals"]["params_after"]
        assert loaded.model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
        layers = dict(loaded.model.named_modules())
        for g in shown["groups"]:
            layer = layers[g["root"]]
            assert (layer.out_channels if hasattr(layer, "out_channels") else layer.out_features) == g["kept"]
        assert screen.plan.to_dict() == shown  # the inspector still shows the unpruned model

        # Pruning onto existing files asks first (naming both); no leaves them as they are.
        stamp = out.stat().st_mtime_ns
        await pilot.press("x")
        await type_into_modal(pilot, str(out))
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), 10, "the overwrite question")
        title = str(pilot.app.screen.query_one(".modal-title", Label).content)
        assert "model-pruned.pt and" in title and "model-pruned.plan.json" in title
        await pilot.press("n")
        await pilot.pause()
        assert pilot.app.screen is screen and not job.running and out.stat().st_mtime_ns == stamp
        await pilot.press("x")
        await type_into_modal(pilot, str(ckpt.parent / "no" / "such" / "out.pt"))
        assert "does not exist" in modal_error(pilot) and not (ckpt.parent / "no").exists()
        await pilot.press("escape")

        # The pruned checkpoint opens in the inspector too; pruning it again composes the plans.
        app.open_checkpoint(out)
        await wait_for(pilot, lambda: screen.ready and screen.path == out, what="the pruned checkpoint to load")
        assert "already pruned" in str(screen.query_one("#inspector-title", Static).content)
        assert screen.plan.totals["params_before"] == params
        await pilot.press("p")
        await type_into_modal(pilot, "0.3")
        second = screen.plan.totals["params_after"]
        await pilot.press("x")
        twice = ckpt.with_name("model-pruned-pruned.pt")
        await type_into_modal(pilot, str(twice))
        await wait_for(pilot, lambda: not job.running and twice.exists(), what="the twice pruned checkpoint")
        again = checkpoint.load(twice)
        assert sum(p.numel() for p in again.model.parameters()) == second < params
        assert again.model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


@run_async
async def test_w_sweeps_on_the_shapes_fallback_and_plots_it(ckpt):
    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        plot = screen.query_one("#sweep", SweepPlot)
        assert not plot.display
        await pilot.press("w")
        await wait_for(pilot, lambda: not screen._sweeping, 240, "the sweep")
        rows = screen.sweep_rows
        assert [r["ratio"] for r in rows] == [round(0.1 * i, 2) for i in range(10)]
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
        assert rows[0]["params"] == screen.plan.totals["params_before"]
        assert rows[-1]["params"] < rows[0]["params"]
        assert "shapes fallback" in screen.sweep_source and "4 classes" in screen.sweep_source
        assert plot.display and plot.rows == rows
        assert plot.current == pytest.approx(screen.current_ratio())
        await pilot.press("right")
        assert plot.current == pytest.approx(screen.current_ratio())


@run_async
async def test_w_uses_the_data_spec_stored_in_the_checkpoint(tmp_path):
    data = {"dataset": "shapes", "num_classes": 4, "train_size": 64, "val_size": 32, "image_size": 32}
    path = make_checkpoint(tmp_path / "spec.pt", meta={"spec": {"data": data}})
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.press("w")
        await wait_for(pilot, lambda: not screen._sweeping, 240, "the sweep")
        assert len(screen.sweep_rows) == 10
        assert "from the checkpoint's spec" in screen.sweep_source


# ---------------------------------------------------------------- robustness


@run_async
async def test_keys_before_a_checkpoint_is_open_do_not_crash(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, InspectorScreen) and not screen.ready
        await pilot.press("right", "t", "p", "k", "r", "l", "s", "x", "w", "enter")
        await pilot.pause()
        assert app.screen is screen


@run_async
async def test_unloadable_checkpoint_shows_the_error(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(make_model().state_dict(), bare)
    app = make_app(bare)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: "bare state_dict" in str(screen.query_one("#inspector-message-text", Static).content),
                       what="the error")
        assert not screen.ready


@run_async
async def test_below_80x24_one_message_then_the_inspector_again(ckpt):
    from tui.screens.too_small import TooSmallScreen

    app = make_app(ckpt)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready_inspector(pilot)
        await pilot.resize_terminal(50, 15)
        await wait_for(pilot, lambda: isinstance(app.screen, TooSmallScreen), 10, "the message")
        text = str(app.screen.query_one("#too-small-text", Static).content)
        assert "terminal too small (need 80x24)" in text and "50x15" in text
        await pilot.press("right", "l", "2", "question_mark")  # nothing happens under the message
        await pilot.pause()
        assert isinstance(app.screen, TooSmallScreen) and screen.settings.percent == 0.5
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: app.screen is screen, 10, "the inspector again")
        await pilot.press("right")
        assert screen.settings.percent == pytest.approx(0.51)
