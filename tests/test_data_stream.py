"""The streaming imagefolder path: same batches as in memory, bounded memory, workers, cache."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import data, threads
from engine.config import DataSpec
from engine.data import decode, imagefolder, resources
from engine.data.loader import TensorLoader
from engine.data.stream import StreamLoader
from engine.errors import DataError

from helpers import make_images

AUGMENT = [{"random_crop": {"padding": 2, "padding_mode": "reflect"}}, "horizontal_flip", "cutout", "color_jitter"]


def spec(path: Path, **kw) -> DataSpec:
    return DataSpec(**{"dataset": "imagefolder", "path": path, "image_size": 8, "val_fraction": 0.25,
                       "test_fraction": 0.25, "augment": AUGMENT, "workers": 0, **kw})


def epoch(loader, e: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(e, start)
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_images(tmp_path / "imgs", classes=3, per_class=12)
    return tmp_path / "imgs"


@pytest.mark.parametrize("workers", [0, 1])
def test_streaming_gives_the_in_memory_batches(folder, workers):
    memory = data.build(spec(folder, cache="memory"), batch_size=5, seed=4)
    stream = data.build(spec(folder, cache="none", workers=workers), batch_size=5, seed=4)
    assert isinstance(memory.train, TensorLoader) and isinstance(stream.train, StreamLoader)
    assert (memory.mean, memory.std) == (stream.mean, stream.std)
    for split in ("train", "val", "test"):
        m, s = getattr(memory, split), getattr(stream, split)
        assert len(m) == len(s) and m.dataset_size == s.dataset_size
        for e in (0, 1):
            assert same(epoch(m, e), epoch(s, e)), (split, e)
    assert not same(epoch(stream.train, 0), epoch(stream.train, 1))
    # Resuming inside an epoch: the same batches from there on.
    full = epoch(stream.train, 1)
    for loader in (stream.train, memory.train):
        assert same(epoch(loader, 1, start=2), full[2:])
        assert same([(x.clone(), y.clone()) for x, y in loader], full)  # the next pass is whole


def test_a_copy_without_augmentation_leaves_the_loader_as_it_was(folder):
    # How deployment reads calibration images: copy.copy(train), augment = False.
    import copy

    for cache in ("memory", "none"):
        train = data.build(spec(folder, cache=cache), batch_size=5, seed=4).train
        plain = data.build(spec(folder, cache=cache, augment=False), batch_size=5, seed=4).train
        before = epoch(train, 0)
        clone = copy.copy(train)
        clone.augment = False
        assert not clone.augment and train.augment
        assert same(epoch(clone, 0), epoch(plain, 0))
        assert same(epoch(train, 0), before)


def test_resume_skips_batches_without_decoding_them(folder, monkeypatch):
    loader = data.build(spec(folder, cache="none"), batch_size=4, seed=1).train
    decoded = []
    real = decode.image
    monkeypatch.setattr(decode, "image", lambda path, size, box=None: decoded.append(path) or real(path, size, box))
    tail = epoch(loader, 2, start=3)
    assert len(tail) == len(loader) - 3
    assert len(decoded) == sum(len(y) for _, y in tail) == loader.num_samples - 12


def test_streaming_shards_like_the_in_memory_loader(folder):
    for rank in (0, 1):
        kw = {"seed": 2, "rank": rank, "world_size": 2}
        memory = data.build(spec(folder, cache="memory"), batch_size=4, **kw)
        stream = data.build(spec(folder, cache="none"), batch_size=4, **kw)
        for split in ("train", "val"):
            m, s = getattr(memory, split), getattr(stream, split)
            m.set_epoch(3)
            s.set_epoch(3)
            assert torch.equal(m.indices(), s.indices())
            assert same(epoch(m, 3), epoch(s, 3))


def test_streaming_holds_a_bounded_number_of_decoded_images(tmp_path, monkeypatch):
    """Streamed with 2 worker processes, never more than workers x prefetch batches are decoded
    ahead of the consumer, and building the loader decodes only the mean/std sample."""
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("counts decodes in forked workers through a patched module")
    make_images(tmp_path / "big" / "train", classes=4, per_class=150, size=(12, 12))
    make_images(tmp_path / "big" / "val", classes=4, per_class=2, size=(12, 12))
    count = multiprocessing.Value("i", 0)
    real = decode.image

    def counted(path, size, box=None):
        with count.get_lock():
            count.value += 1
        return real(path, size, box)

    monkeypatch.setattr(decode, "image", counted)
    monkeypatch.setattr(imagefolder, "STATS_SAMPLE", 40)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    bundle = data.build(spec(tmp_path / "big", cache="none", workers=2, test_fraction=0.0), batch_size=10)
    assert count.value == 40  # the mean/std sample, decoded chunk by chunk
    loader = bundle.train
    assert loader.workers == 2 and not hasattr(loader, "images")
    bound = (2 * 2 + 1) * 10  # in-flight batches (workers x prefetch) plus the one being used
    consumed, ahead = 0, []
    with count.get_lock():
        count.value = 0
    for _, y in loader:
        ahead.append(count.value - consumed)
        consumed += len(y)
    assert consumed == 600 and count.value == 600
    assert max(ahead) <= bound, max(ahead)


def test_workers_beyond_the_cores_are_clamped_with_a_note(folder, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    bundle = data.build(spec(folder, cache="none", workers=64), batch_size=4)
    assert "data.workers=64 is more than the 2 CPU cores here; using 2" in bundle.notes
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert resources.resolve_workers(3) == (1, "data.workers=3 is more than the 1 CPU core here; using 1")
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert bundle.train.workers == 2
    assert resources.resolve_workers("auto", world_size=1) == (2, None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resources.resolve_workers("auto", world_size=2) == (1, None)


def test_cache_auto_streams_what_does_not_fit(folder, monkeypatch):
    assert isinstance(data.build(spec(folder), batch_size=4).train, TensorLoader)
    monkeypatch.setattr(resources, "available_memory", lambda: 4000)
    bundle = data.build(spec(folder), batch_size=4)
    assert isinstance(bundle.train, StreamLoader)
    assert any("more than the in-memory budget" in n and "streaming" in n for n in bundle.notes)
    with pytest.raises(DataError, match="set data.cache: none to stream them"):
        data.build(spec(folder, cache="memory"), batch_size=4)
    shapes = data.build(DataSpec(train_size=32, val_size=16, cache="none"), batch_size=8)
    assert isinstance(shapes.train, TensorLoader)
    assert any("shapes is read whole, so it stays in memory" in n for n in shapes.notes)


def test_a_corrupt_file_met_while_streaming_names_it(folder, monkeypatch):
    (folder / "class1" / "zz_broken.png").write_bytes(b"\x89PNG not really")
    # the mean/std sample is the first training image (class0), so the build itself succeeds
    monkeypatch.setattr(imagefolder, "stats_sample", lambda found, seed: np.arange(1))
    bundle = data.build(spec(folder, cache="none", workers=1, augment=False, test_fraction=0.0), batch_size=4)
    with pytest.raises(DataError, match=r"cannot decode .*zz_broken.png.*remove or replace") as err:
        for split in (bundle.train, bundle.val):
            list(split)
    assert "Traceback" not in str(err.value)


def test_worker_processes_stay_between_passes_except_for_the_test_split(folder, tmp_path, monkeypatch):
    """Train and val keep their workers from one epoch to the next (no restart cost per epoch);
    the test split, read once at the end, lets them go; new augmentation ops restart them."""
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("records decoding processes through a patched module in forked workers")
    log = tmp_path / "pids.txt"
    real = decode.image

    def recorded(path, size, box=None):
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return real(path, size, box)

    monkeypatch.setattr(decode, "image", recorded)
    bundle = data.build(spec(folder, cache="none", workers=1), batch_size=5)

    def decoders(loader, e: int) -> set[int]:
        log.write_text("")
        epoch(loader, e)
        return {int(p) for p in log.read_text().split()}

    for loader in (bundle.train, bundle.val):
        first, second = decoders(loader, 0), decoders(loader, 1)
        assert len(first) == 1 and os.getpid() not in first
        assert first == second
    assert decoders(bundle.test, 0).isdisjoint(decoders(bundle.test, 1))
    before = decoders(bundle.train, 2)
    bundle.train.augment = ["horizontal_flip"]
    assert decoders(bundle.train, 2).isdisjoint(before)


def test_streamed_batches_are_pinned_only_for_cuda(folder):
    for device, pinned in ((None, False), (torch.device("cpu"), False), ("cuda:1", True)):
        bundle = data.build(spec(folder, cache="none"), batch_size=4, device=device)
        assert [s.pin_memory for s in (bundle.train, bundle.val, bundle.test)] == [pinned] * 3, device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_streaming_pins_batches_for_cuda(folder):
    bundle = data.build(spec(folder, cache="none", workers=1), batch_size=4, device=torch.device("cuda"))
    x, _ = next(iter(bundle.train))
    assert x.is_pinned()


def test_cache_auto_streams_large_files_for_random_resized_crop(tmp_path):
    make_images(tmp_path / "photos", classes=2, per_class=6, size=(40, 32))
    rrc = ["random_resized_crop", "horizontal_flip"]
    bundle = data.build(spec(tmp_path / "photos", augment=rrc, test_fraction=0.0), batch_size=4)
    assert isinstance(bundle.train, StreamLoader)
    assert any("cuts from the full-resolution files (typically 32 px" in n for n in bundle.notes)
    small = data.build(spec(tmp_path / "photos", augment=rrc, image_size=24, test_fraction=0.0), batch_size=4)
    assert isinstance(small.train, TensorLoader)
    x, _ = next(iter(bundle.train))
    assert x.shape == (4, 3, 8, 8)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"workers": -1}, "data.workers: must be auto or a number of worker processes, 0 or more .*; got -1$"),
        ({"workers": "many"}, "data.workers: must be auto or .*; got 'many'$"),
        ({"cache": "disk"}, "data.cache: must be one of auto, memory or none; got 'disk'$"),
    ],
)
def test_bad_workers_or_cache_is_one_preset_error_naming_the_key(value, message):
    from engine.config import spec_from_dict
    from engine.errors import PresetError

    with pytest.raises(PresetError, match=message) as err:
        spec_from_dict({"data": value})
    assert str(err.value).count("\n") == 1  # one line per key, not one per branch of int | "auto"
