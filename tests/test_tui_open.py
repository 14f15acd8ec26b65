"""Opening checkpoints in the inspector: what it is doing, the cache that makes reopening
instant, files that are not checkpoints, and quitting without waiting on torch."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from test_tui_inspector import make_checkpoint
from textual.widgets import Static

from tui import cli, model_cache
from tui.app import make_app
from tui.widgets.ckpt_trust import TrustModal

from helpers import run_async, wait_for

SIZE = (80, 24)


@pytest.fixture(autouse=True)
def empty_cache():
    model_cache.clear()
    yield
    model_cache.clear()


def test_open_model_says_each_step_and_caches_by_size_and_mtime(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt")
    steps: list[str] = []
    opened, cached = model_cache.open_model(path, False, steps.append)
    assert not cached and [s.split(" ")[0] for s in steps] == ["reading", "measuring", "tracing"]
    assert "KiB" in steps[0] and opened.inputs.n_channels > 0

    again: list[str] = []
    hit, cached = model_cache.open_model(tmp_path / "." / "m.pt", False, again.append)
    assert cached and hit is opened and again == []  # no step at all: nothing is read
    _, cached = model_cache.open_model(path, True, again.append)
    assert not cached  # other trust: loaded afresh

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed on disk
    changed, cached = model_cache.open_model(path, False, again.append)
    assert not cached and changed is not opened


@run_async
async def test_reopening_a_checkpoint_is_instant(tmp_path):
    a = make_checkpoint(tmp_path / "a.pt")
    b = make_checkpoint(tmp_path / "b.pt", seed=1)
    app = make_app(a)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.ready, what="a")
        first = screen.loaded
        app.open_checkpoint(b)
        text = str(screen.query_one("#inspector-message-text", Static).content)
        assert text.startswith("Opening") and "b.pt" in text
        await wait_for(pilot, lambda: screen.ready and screen.path == b, what="b")
        app.open_checkpoint(a)
        await wait_for(pilot, lambda: screen.ready and screen.path == a, 5, "a again")
        assert screen.loaded is first  # from the cache: not read, rebuilt or traced again


@pytest.mark.parametrize("name,content", [("demo.yaml", "name: demo\nstages: [{type: train}]\n"),
                                          ("notes.pt", "just some text, renamed\n")])
@run_async
async def test_a_file_that_is_not_a_checkpoint_is_said_so(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        message = screen.query_one("#inspector-message-text", Static)
        await wait_for(pilot, lambda: "Could not open" in str(message.content), what="the refusal")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, TrustModal)  # nothing to unpickle: no question
        assert "could not open" in str(screen.query_one("#inspector-title", Static).content)
        assert "loading" not in str(screen.query_one("#inspector-title", Static).content)


@run_async
async def test_quit_does_not_wait_for_background_work(tmp_path):
    release = threading.Event()
    returned: list[bool] = []

    def long_job() -> None:  # like a sweep on a big model: a minute unless released
        release.wait(60)
        returned.append(True)

    app = make_app(tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            worker = app.run_worker(long_job, thread=True, group="sweep", exit_on_error=False)
            await wait_for(pilot, lambda: worker.is_running, what="the worker")
            await pilot.press("q")
            assert worker.is_cancelled
        assert not returned  # the app was gone while the job still ran: quitting did not wait for it
    finally:
        release.set()


def test_leaving_skips_torch_teardown(monkeypatch):
    import torch  # noqa: F401  (loaded, as after opening a checkpoint)

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    assert "torch" in sys.modules
    cli.leave(3)
    assert exits == [3]
