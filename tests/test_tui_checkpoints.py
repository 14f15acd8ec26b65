"""Checkpoints screen: the tree shows checkpoints and run directories only, the panel shows what
`peek` read (or why it could not), enter opens the inspector, pickled files need a yes first."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static

from engine import checkpoint, runs
from tui.app import make_app
from tui.screens.checkpoints import CheckpointsScreen
from tui.screens.inspector import InspectorScreen
from tui.widgets.ckpt_format import arch_label
from tui.widgets.ckpt_tree import CheckpointTree, holds_checkpoints
from tui.widgets.ckpt_trust import TrustModal

from helpers import run_async, wait_for

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
SIZE = (100, 30)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = checkpoint.build_model(ARCH)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.tensor(rng.uniform(0.001, 1.0, m.weight.numel()), dtype=torch.float32))
    return model.eval()


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, make_model(seed), ARCH, meta={"epoch": 7, "stage": "train", "metrics": {"accuracy": 0.8125}})
    return path


def labels(tree: CheckpointTree) -> dict[str, str]:
    """name -> rendered label of every loaded node below the root."""
    out = {}

    def walk(node) -> None:
        for child in node.children:
            out[child.data.path.name] = tree.render_label(child, tree.rich_style, tree.rich_style).plain
            walk(child)

    walk(tree.root)
    return out


def panel_text(screen: CheckpointsScreen) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(screen.panel.shown or "")
    return console.export_text()


async def move_to(pilot: Pilot, tree: CheckpointTree, name: str) -> None:
    await wait_for(pilot, lambda: any(n.data and n.data.path.name == name for n in _nodes(tree)), 20, name)
    node = next(n for n in _nodes(tree) if n.data and n.data.path.name == name)
    tree.move_cursor(node)
    await pilot.pause()


async def ask_to_open_pickled(pilot: Pilot, screen: CheckpointsScreen, name: str) -> None:
    """Enter on a pickled checkpoint: the panel says it holds pickled objects, then the question."""
    await move_to(pilot, screen.tree, name)
    await wait_for(pilot, lambda: "pickled Python objects" in panel_text(screen), what="the trust notice")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TrustModal), what="the confirmation")


def _nodes(tree: CheckpointTree) -> list:
    out, stack = [], [tree.root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    return out


def build_folder(root: Path) -> dict[str, Path]:
    paths = {
        "model": make_checkpoint(root / "model.pt"),
        "deep": make_checkpoint(root / "deep" / "a" / "b" / "far.ckpt"),
    }
    (root / "notes.txt").write_text("not a checkpoint")
    (root / "empty").mkdir()
    (root / "empty" / "readme.md").write_text("nothing here")
    make_checkpoint(root / ".hidden" / "secret.pt")
    run = runs.create_run_dir(root / "runs", "demo")
    runs.RunWriter(run).status(state="done", preset="demo", best_accuracy=0.875, stage="train", progress=1.0)
    make_checkpoint(run / "weights" / "best.pt")
    paths["run"] = run
    good = paths["model"].read_bytes()
    paths["truncated"] = root / "truncated.pt"
    paths["truncated"].write_bytes(good[: len(good) // 2])
    return paths


def test_holds_checkpoints_scan(tmp_path):
    make_checkpoint(tmp_path / "a" / "b" / "m.pth")
    (tmp_path / "c" / "d").mkdir(parents=True)
    make_checkpoint(tmp_path / "e" / ".venv" / "x.pt")
    assert holds_checkpoints(tmp_path / "a")
    assert not holds_checkpoints(tmp_path / "c")
    assert not holds_checkpoints(tmp_path / "e")  # hidden and virtualenv folders are not searched
    assert not holds_checkpoints(tmp_path / "a", depth=1)


@run_async
async def test_tree_filters_to_checkpoints_and_runs(tmp_path):
    build_folder(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, CheckpointsScreen)
        tree = screen.tree
        await wait_for(pilot, lambda: "model.pt" in labels(tree), what="the tree")
        top = {child.data.path.name for child in tree.root.children}
        assert top == {"model.pt", "deep", "runs", "truncated.pt"}
        await move_to(pilot, tree, "runs")
        await pilot.press("enter")  # expands
        await wait_for(pilot, lambda: "demo" in labels(tree), what="the run directory")
        assert "demo  done · acc 87.5%" in labels(tree)["demo"]
        await move_to(pilot, tree, "demo")
        await wait_for(pilot, lambda: "run demo" in panel_text(screen), 10, "the run panel")
        assert "87.50%" in panel_text(screen)


@run_async
async def test_panel_shows_peek_and_enter_opens_the_inspector(tmp_path):
    paths = build_folder(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "model.pt")
        await wait_for(pilot, lambda: "slimlab/1" in panel_text(screen), what="the peek result")
        text = panel_text(screen)
        info = checkpoint.peek(paths["model"])
        assert "vgg(depth=11, width=0.125)" in text and "4 classes" in text
        assert f"({info['params']})" in text and "81.25%" in text
        assert f"BN layers  {info['bn_layers']}" in text
        assert "epoch      8" in text  # stored 0-based (7): shown as the run counted it, from 1
        await pilot.press("enter")
        await pilot.pause()
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen) and app.current_mode == "inspector"
        await wait_for(pilot, lambda: inspector.ready, what="the inspector to load")
        assert inspector.path == paths["model"].resolve() or inspector.path == paths["model"]
        await pilot.press("1")
        await pilot.pause()
        assert app.screen is screen


@run_async
async def test_truncated_checkpoint_shows_the_error_and_the_app_keeps_running(tmp_path):
    build_folder(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "truncated.pt")
        await wait_for(pilot, lambda: "Cannot be read" in panel_text(screen), what="the error")
        assert "truncated" in panel_text(screen)
        await pilot.press("enter")
        await pilot.pause()
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen)
        message = inspector.query_one("#inspector-message-text", Static)
        await wait_for(pilot, lambda: "truncated" in str(message.content), what="the inspector's error")
        await pilot.press("1")
        await move_to(pilot, screen.tree, "model.pt")
        await wait_for(pilot, lambda: "slimlab/1" in panel_text(screen), what="a good checkpoint after a bad one")


@run_async
async def test_junk_shows_its_real_size_and_what_it_looks_like(tmp_path):
    (tmp_path / "junk.pt").write_bytes(np.random.default_rng(0).bytes(200 * 1024))
    (tmp_path / "notes.pth").write_text("not weights\n" * 100)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "junk.pt")
        await wait_for(pilot, lambda: "Cannot be read" in panel_text(screen), what="the junk diagnosis")
        text = " ".join(panel_text(screen).split())  # undo the panel's line wrapping
        assert "200.0 KiB" in text and "not a checkpoint (unknown bytes" in text and "--trust" not in text
        await move_to(pilot, screen.tree, "notes.pth")
        await wait_for(pilot, lambda: "looks like text" in " ".join(panel_text(screen).split()), what="the text diagnosis")


@run_async
async def test_pickled_checkpoint_loads_only_after_yes(tmp_path):
    pickled = tmp_path / "whole.pt"
    torch.save(make_model(), pickled)  # a whole nn.Module: unpickling runs code
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await ask_to_open_pickled(pilot, screen, "whole.pt")
        await pilot.press("n")
        await pilot.pause()
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen) and not inspector.ready
        await pilot.press("1")
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrustModal), what="the confirmation again")
        await pilot.press("y")
        await wait_for(pilot, lambda: inspector.ready, what="the trusted load")
        assert inspector.loaded.source == "module"
        assert inspector.plan.totals["prunable_before"] > 0


@run_async
async def test_m_on_a_run_directory_opens_the_monitor(tmp_path):
    paths = build_folder(tmp_path)
    app = make_app(tmp_path, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "runs")
        await pilot.press("m")
        await pilot.pause()
        assert app.screen is screen  # not a run directory: a notice, no switch
        await pilot.press("enter")
        await move_to(pilot, screen.tree, "demo")
        await pilot.press("m")
        await wait_for(pilot, lambda: app.current_mode == "monitor", 10, "the monitor")
        monitor = app.get_screen("monitor")
        await wait_for(pilot, lambda: monitor.run_path == paths["run"].resolve() or monitor.run_path == paths["run"],
                       10, "the monitor to show the run")


@run_async
async def test_tiny_terminal_resize(tmp_path):
    build_folder(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "model.pt")
        await pilot.resize_terminal(40, 10)
        await pilot.pause()
        await pilot.press("down", "up")
        await pilot.resize_terminal(100, 30)
        await wait_for(pilot, lambda: "slimlab/1" in panel_text(screen), what="the panel after resizing")


@run_async
async def test_a_file_naming_a_module_class_is_built_only_after_a_yes_that_shows_it(tmp_path, monkeypatch):
    (tmp_path / "slimlab_tui_trust_net.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes, in_channels=3, hidden=8):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)\n"
        "        self.bn = nn.BatchNorm2d(hidden)\n"
        "        self.fc = nn.Linear(hidden, num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from engine import models
    from engine.trust import Trust

    name = "slimlab_tui_trust_net:Net"
    arch = checkpoint.arch_dict(name, 4, 3, {"hidden": 6})
    model = models.build(name, 4, hidden=6, trust=Trust().allowing(name))
    checkpoint.save(tmp_path / "own.pt", model, arch)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "own.pt")
        await wait_for(pilot, lambda: "asks before building it" in panel_text(screen), what="the panel's notice")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrustModal), what="the confirmation")
        shown = str(app.screen.query_one("#trust-arch", Static).render())
        assert shown == "slimlab_tui_trust_net:Net(hidden=6)"
        await pilot.press("n")
        await pilot.pause()
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen) and not inspector.ready
        await pilot.press("1")
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrustModal), what="the confirmation again")
        await pilot.press("y")
        await wait_for(pilot, lambda: inspector.ready, what="the confirmed load")
        assert inspector.loaded.arch["name"] == name


@run_async
async def test_run_labels_say_progress_and_accuracy_and_follow_the_run(tmp_path):
    run = runs.create_run_dir(tmp_path / "runs", "live")
    writer = runs.RunWriter(run)
    writer.status(state="running", preset="demo", stages=["train", "sparse"], completed=["train"], stage="sparse",
                  stage_index=1, progress=0.5, best_accuracy=0.375, pid=os.getpid(), heartbeat=time.time())
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await move_to(pilot, screen.tree, "runs")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "live" in labels(screen.tree), what="the run")
        assert "live  running 75% · acc 37.5%" in labels(screen.tree)["live"]  # run progress, then accuracy
        await move_to(pilot, screen.tree, "live")
        await wait_for(pilot, lambda: "run 75% · stage sparse 2/2 50%" in panel_text(screen), what="the panel")
        writer.status(state="done", progress=1.0, completed=["train", "sparse"], best_accuracy=0.91, ended=time.time())
        await wait_for(pilot, lambda: "live  done · acc 91.0%" in labels(screen.tree)["live"], 15,
                       "the label to follow the run without r")
        await wait_for(pilot, lambda: "91.00%" in panel_text(screen), 10, "the panel to follow it")


@run_async
async def test_files_a_run_writes_appear_without_r(tmp_path):
    # A new user starts a run from an empty folder: the runs folder, the run and its first
    # checkpoint show up in the tree on their own, and what was open stays open.
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.pause(0.5)
        assert labels(screen.tree) == {}
        run = runs.create_run_dir(tmp_path / "runs", "demo")
        writer = runs.RunWriter(run)
        writer.status(state="running", preset="demo", stages=["train"], stage="train", progress=0.2,
                      pid=os.getpid(), heartbeat=time.time())
        await move_to(pilot, screen.tree, "runs")
        await pilot.press("enter")
        await move_to(pilot, screen.tree, "demo")
        await pilot.press("enter")
        assert "weights" not in labels(screen.tree)
        make_checkpoint(run / "weights" / "train.pt")
        await wait_for(pilot, lambda: "weights" in labels(screen.tree), 15, "the new weights folder")
        assert screen.tree.cursor_node.data.path == run  # the cursor stays where it was
        (run / "weights" / "train.pt").unlink()
        (run / "weights").rmdir()
        await wait_for(pilot, lambda: "weights" not in labels(screen.tree), 15, "the removed folder to go")
        assert "demo" in labels(screen.tree)


def test_arch_label_abbreviates_structured_kwargs():
    assert arch_label({"name": "vgg", "kwargs": {"depth": 11, "width": 0.25}}) == "vgg(depth=11, width=0.25)"
    detector = {"name": "ultralytics:yolov8n.yaml",
                "kwargs": {"yaml": {"nc": 3, "backbone": []}, "names": ["a", "b", "c", "d", "e"], "width": 0.25}}
    assert arch_label(detector) == "ultralytics:yolov8n.yaml(yaml={…}, names=[5 items], width=0.25)"
    assert arch_label({"name": "resnet_cifar"}) == "resnet_cifar"
