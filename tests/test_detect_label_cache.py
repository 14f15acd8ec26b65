"""Ultralytics' label cache is data: read without running code, written so two runs can share a dataset."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.detect


class Payload:
    """Unpickling this writes a marker file: what a crafted cache in a shared dataset would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def dataset(tmp_path):
    from engine.detect.data import load
    from engine.detect.synth import write_dataset

    return load(write_dataset(tmp_path / "data", train=6, val=4, size_range=(64, 96)))


def val_labels(data, tmp_path):
    """The val split's labels as Ultralytics' dataset code reads them (from its cache when valid)."""
    import torch

    from engine.detect.evaluate import Evaluator

    ev = Evaluator(data, imgsz=64, batch=2, device=torch.device("cpu"), work_dir=tmp_path / "ev", rect=False)
    return ev.loader.dataset.labels


def test_cache_written_then_read_back_as_arrays(tmp_path, ultralytics_offline):
    from engine.detect import label_cache

    data = dataset(tmp_path)
    first = val_labels(data, tmp_path)
    cache = tmp_path / "data" / "labels" / "val.cache"
    assert cache.exists() and not list(cache.parent.glob(".*.tmp"))
    stored = label_cache.load(cache)
    assert [lb["im_file"] for lb in stored["labels"]] == [lb["im_file"] for lb in first]
    assert all(isinstance(lb["bboxes"], np.ndarray) for lb in stored["labels"])
    again = val_labels(data, tmp_path)  # from the cache this time
    assert [lb["bboxes"].tolist() for lb in again] == [lb["bboxes"].tolist() for lb in first]


def test_crafted_cache_never_runs_and_is_rebuilt(tmp_path, ultralytics_offline):
    from engine.detect import label_cache

    data = dataset(tmp_path)
    honest = val_labels(data, tmp_path)
    cache = tmp_path / "data" / "labels" / "val.cache"
    marker = tmp_path / "ran"
    crafted = label_cache.load(cache)
    crafted["msgs"] = [Payload(str(marker))]
    with open(cache, "wb") as f:
        np.save(f, crafted, allow_pickle=True)
    with pytest.raises(label_cache.CacheRefused, match="arrays only, not io.open"):
        label_cache.load(cache)
    rebuilt = val_labels(data, tmp_path)
    assert not marker.exists()
    assert [lb["bboxes"].tolist() for lb in rebuilt] == [lb["bboxes"].tolist() for lb in honest]
    assert label_cache.load(cache)["msgs"] == []  # the scan wrote an honest cache over it


def test_two_writers_at_once_both_succeed(tmp_path, ultralytics_offline):
    from ultralytics.data import dataset  # the names its dataset classes call

    from engine.detect import label_cache

    path = tmp_path / "train.cache"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(60):
                dataset.save_dataset_cache_file("", path, {"labels": [{"bboxes": np.full((2, 4), n, np.float32)}],
                                                           "i": i}, "1")
                dataset.load_dataset_cache_file(path)  # never half a file
        except BaseException as e:  # noqa: BLE001 - any failure in a writer fails the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert label_cache.load(path)["i"] == 59
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
