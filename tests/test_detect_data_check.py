"""The detection dataset check reads label files only (never an image), on nested folders and lists."""

from __future__ import annotations

import pytest

from engine.detect.data import load
from engine.errors import DataError


def dataset(root, layout: dict[str, int], labels_for=lambda i: f"{i % 2} 0.5 0.5 0.2 0.2\n"):
    """Images (not decodable: the check must not open them) under images/<sub>/ and their labels."""
    n = 0
    for sub, count in layout.items():
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
        (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            (root / "images" / sub / f"{n:04d}.jpg").write_bytes(b"not an image")
            text = labels_for(n)
            if text is not None:
                (root / "labels" / sub / f"{n:04d}.txt").write_text(text)
            n += 1
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    return root / "data.yaml"


def test_nested_folders_backgrounds_and_counts(tmp_path):
    yaml_path = dataset(tmp_path, {"train/part1": 5, "train/part2/deeper": 4, "val": 3},
                        labels_for=lambda i: None if i == 2 else ("" if i == 3 else "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n"))
    data = load(yaml_path)
    train = data.splits["train"]
    assert (train.images, train.labelled, train.background, train.objects) == (9, 7, 2, 14)
    assert data.splits["val"].images == 3 and data.splits["val"].objects == 6


def test_a_bad_line_deep_in_a_large_split_is_named(tmp_path):
    yaml_path = dataset(tmp_path, {"train": 400, "val": 2},
                        labels_for=lambda i: "5 0.5 0.5 0.2 0.2\n" if i == 377 else "0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"0377.txt line 1: class 5 is outside 0..1"):
        load(yaml_path)


def test_a_list_file_of_images(tmp_path):
    dataset(tmp_path, {"train": 4, "val": 2})
    (tmp_path / "train.txt").write_text("".join(f"images/train/{i:04d}.jpg\n" for i in (0, 2)))
    (tmp_path / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [a, b]\n")
    assert load(tmp_path / "data.yaml").splits["train"].images == 2
