"""engine.data: generated shapes, CIFAR batch files, image folders, and the batch loader."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import data
from engine.config import DataSpec
from engine.data import cifar, shapes
from engine.data.loader import TensorLoader
from engine.data.splits import holdout, split_indices
from engine.data.stats import channel_mean_std
from engine.errors import DataError


def small_shapes(**kw) -> DataSpec:
    return DataSpec(**{"train_size": 120, "val_size": 40, **kw})


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# --- shapes -----------------------------------------------------------------


def test_shapes_is_deterministic_by_seed():
    a = shapes.generate(64, num_classes=6, image_size=32, seed=3, stream=0)
    b = shapes.generate(64, num_classes=6, image_size=32, seed=3, stream=0)
    c = shapes.generate(64, num_classes=6, image_size=32, seed=4, stream=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_shapes_train_and_val_share_no_image():
    bundle = data.build(small_shapes(), batch_size=16)
    train = {bytes(img.numpy()) for img in bundle.train.images}
    assert not any(bytes(img.numpy()) in train for img in bundle.val.images)


def test_shapes_classes_balanced_and_values_in_range():
    x, y = shapes.generate(603, num_classes=6, image_size=24, seed=0, stream=0)
    assert x.dtype == torch.uint8 and x.shape == (603, 3, 24, 24)
    assert y.dtype == torch.int64
    counts = torch.bincount(y, minlength=6)
    assert counts.max() - counts.min() <= 1
    assert int(y.min()) == 0 and int(y.max()) == 5
    # Every image shows a shape: foreground pixels make the per-image spread large.
    spread = x.float().amax(dim=(1, 2, 3)) - x.float().amin(dim=(1, 2, 3))
    assert bool((spread > 60).all())


def test_shapes_bundle_facts_and_normalised_batches():
    bundle = data.build(small_shapes(num_classes=10, image_size=16), batch_size=40)
    assert bundle.num_classes == 10 and bundle.class_names == list(shapes.KINDS)
    assert bundle.in_channels == 3 and bundle.image_size == 16
    x = torch.cat([x for x, _ in bundle.val])
    assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    # Train statistics normalise the val split to roughly zero mean, unit std.
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.25
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.25


def test_shapes_rejects_class_count_outside_the_kinds():
    with pytest.raises(DataError, match="num_classes between 2 and 10"):
        shapes.load(num_classes=11, train_size=10, val_size=10, image_size=32, seed=0)


# --- loader -----------------------------------------------------------------


def make_loader(n: int, **kw) -> TensorLoader:
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    args = {
        "batch_size": 8,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "shuffle": True,
        "augment": False,
        **kw,
    }
    return TensorLoader(images, torch.arange(n), **args)


def test_loader_len_and_batch_shapes():
    loader = make_loader(30)
    got = batches(loader)
    assert len(loader) == len(got) == 4
    assert [len(y) for _, y in got] == [8, 8, 8, 6]
    assert got[0][0].shape == (8, 3, 8, 8) and got[0][0].dtype == torch.float32
    assert got[0][1].dtype == torch.int64
    assert sorted(torch.cat([y for _, y in got]).tolist()) == list(range(30))
    dropped = make_loader(30, drop_last=True)
    assert len(dropped) == len(batches(dropped)) == 3


def test_loader_normalises_with_mean_and_std():
    loader = make_loader(4, shuffle=False, batch_size=4)
    x, y = next(iter(loader))
    expected = (y.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x[:, 0, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("n", [100, 101])
def test_ddp_shards_are_equal_disjoint_and_cover(n):
    ranks = [make_loader(n, seed=5, rank=r, world_size=2) for r in range(2)]
    for loader in ranks:
        loader.set_epoch(2)
    idx = [loader.indices() for loader in ranks]
    assert len(idx[0]) == len(idx[1]) == ranks[0].num_samples == (n + 1) // 2
    assert len(ranks[0]) == len(ranks[1])
    assert set(idx[0].tolist()) | set(idx[1].tolist()) == set(range(n))
    overlap = set(idx[0].tolist()) & set(idx[1].tolist())
    assert len(overlap) == 2 * ((n + 1) // 2) - n  # only the padding repeats
    seen = [torch.cat([y for _, y in loader]) for loader in ranks]
    assert torch.equal(seen[0], idx[0]) and torch.equal(seen[1], idx[1])


def test_val_shards_do_not_pad():
    ranks = [
        make_loader(101, shuffle=False, pad_shards=False, rank=r, world_size=2) for r in range(2)
    ]
    labels = [torch.cat([y for _, y in loader]).tolist() for loader in ranks]
    assert len(labels[0]) + len(labels[1]) == 101
    assert sorted(labels[0] + labels[1]) == list(range(101))


def test_augmentation_changes_pixels_but_keeps_labels():
    spec = small_shapes()
    plain = data.build(spec.model_copy(update={"augment": False}), batch_size=32, seed=1)
    aug = data.build(spec, batch_size=32, seed=1)
    for x_plain, y_plain in plain.train:
        x_aug, y_aug = next(iter(aug.train))
        assert torch.equal(y_plain, y_aug)
        changed = (x_plain != x_aug).flatten(1).any(dim=1).float().mean()
        assert changed > 0.5
        break
    # The val split is never augmented.
    for (a, _), (b, _) in zip(plain.val, aug.val, strict=True):
        assert torch.equal(a, b)


def test_set_epoch_fully_determines_the_batches():
    spec = small_shapes()
    a = data.build(spec, batch_size=32, seed=9)
    b = data.build(spec, batch_size=32, seed=9)
    b.train.set_epoch(1)
    batches(b.train)  # an earlier epoch must not leak state into the next
    a.train.set_epoch(3)
    b.train.set_epoch(3)
    first, second = batches(a.train), batches(b.train)
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.train.set_epoch(4)
    other = batches(a.train)
    assert not torch.equal(first[0][1], other[0][1])
    c = data.build(spec, batch_size=32, seed=10)
    c.train.set_epoch(3)
    assert not torch.equal(first[0][1], next(iter(c.train))[1])


def test_augmentation_differs_between_ranks():
    # Every sample is the same image, so rank batches can differ only by augmentation.
    image = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    images, labels = image.expand(64, -1, -1, -1), torch.zeros(64, dtype=torch.int64)
    args = {"batch_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3, "shuffle": True}
    ranks = [
        TensorLoader(images, labels, augment=True, seed=2, rank=r, world_size=2, **args)
        for r in range(2)
    ]
    assert not torch.equal(next(iter(ranks[0]))[0], next(iter(ranks[1]))[0])


# --- helpers ----------------------------------------------------------------


def test_holdout_is_stratified_deterministic_and_disjoint():
    labels = np.repeat(np.arange(3), 10)
    train, val = holdout(labels, 0.2, seed=1)
    again = holdout(labels, 0.2, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert np.bincount(labels[val]).tolist() == [2, 2, 2]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(30))


def test_channel_stats_do_not_depend_on_chunking(monkeypatch):
    from engine.data import stats

    images = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    whole = stats.channel_mean_std(images)
    monkeypatch.setattr(stats, "_ELEMENTS", 100)  # squares 1 image at a time
    assert stats.mean_std_of([images[:7], images[7:30], images[30:]]) == whole


def test_channel_mean_std_matches_numpy():
    images = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_mean_std(images, chunk=7)
    ref = images.numpy().astype(np.float64) / 255
    assert np.allclose(mean, ref.mean(axis=(0, 2, 3)))
    assert np.allclose(std, ref.std(axis=(0, 2, 3)))


def test_names_and_cheap_import():
    assert data.names() == ["shapes", "imagefolder", "cifar10", "cifar100"]
    code = "import sys, engine.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- cifar ------------------------------------------------------------------


def write_pickle(path: Path, obj: object) -> None:
    # Protocol 2 with numpy's pre-2.0 module path: the form the distributed files use.
    blob = pickle.dumps(obj, protocol=2).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray"
    )
    path.write_bytes(blob)


def cifar_batch(rng: np.random.Generator, n: int, num_classes: int, label_key: bytes) -> dict:
    return {
        b"batch_label": b"training batch",
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def make_cifar10(root: Path, per_batch: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(rng, per_batch, 10, b"labels"))
    write_pickle(folder / "test_batch", cifar_batch(rng, per_batch, 10, b"labels"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder


def make_cifar100(root: Path, n: int = 20) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        batch = cifar_batch(rng, n, 100, b"fine_labels")
        batch[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
        write_pickle(folder / name, batch)
    meta = {
        b"fine_label_names": [f"class{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
    }
    write_pickle(folder / "meta", meta)
    return folder


@pytest.mark.parametrize("form", ["folder", "parent"])
def test_cifar10_from_batch_files(tmp_path, form):
    folder = make_cifar10(tmp_path)
    path = folder if form == "folder" else tmp_path
    bundle = data.build(DataSpec(dataset="cifar10", path=path, val_fraction=0.2), batch_size=32)
    # The test batch is the test split; val is held out of the training batches.
    assert bundle.train.dataset_size + bundle.val.dataset_size == 100
    assert 12 <= bundle.val.dataset_size <= 28 and bundle.test.dataset_size == 20
    assert bundle.num_classes == 10 and bundle.class_names[0] == "airplane"
    assert bundle.in_channels == 3 and bundle.image_size == 32
    assert bundle.mean == cifar.LAYOUTS["cifar10"].mean
    rows = []
    for i in range(1, 6):
        batch = pickle.loads((folder / f"data_batch_{i}").read_bytes(), encoding="bytes")
        rows += [(bytes(r), int(y)) for r, y in zip(batch[b"data"], batch[b"labels"], strict=True)]
    got = [(bytes(img.numpy().reshape(-1)), int(y)) for img, y in zip(
        torch.cat([bundle.train.images, bundle.val.images]),
        torch.cat([bundle.train.labels, bundle.val.labels]), strict=True)]
    assert sorted(got) == sorted(rows)
    test = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")
    assert np.array_equal(bundle.test.images.numpy().reshape(20, -1), test[b"data"])
    assert bundle.test.labels.tolist() == test[b"labels"]
    x, y = next(iter(bundle.train))
    assert x.shape == (32, 3, 32, 32) and y.dtype == torch.int64


@pytest.mark.parametrize("form", ["folder", "parent"])
def test_cifar100_from_batch_files(tmp_path, form):
    folder = make_cifar100(tmp_path)
    path = folder if form == "folder" else tmp_path
    bundle = data.build(DataSpec(dataset="cifar100", path=path), batch_size=8)
    assert bundle.num_classes == 100 and bundle.class_names[99] == "class99"
    test = pickle.loads((folder / "test").read_bytes(), encoding="bytes")
    assert bundle.test.labels.tolist() == test[b"fine_labels"]
    assert bundle.std == cifar.LAYOUTS["cifar100"].std


def test_cifar_missing_dir_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere.*not a directory"):
        data.build(DataSpec(dataset="cifar10", path=missing), batch_size=8)
    with pytest.raises(DataError, match="needs data.path"):
        data.build(DataSpec(dataset="cifar10"), batch_size=8)


def test_cifar_missing_batch_file_lists_expected_files(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3 in .*cifar-10-batches-py") as err:
        data.build(DataSpec(dataset="cifar10", path=tmp_path), batch_size=8)
    assert "test_batch" in str(err.value) and "batches.meta" in str(err.value)


def test_cifar_not_a_pickle(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="data_batch_2 is not a readable CIFAR pickle"):
        data.build(DataSpec(dataset="cifar10", path=folder), batch_size=8)


def test_cifar_wrong_keys_and_shape(tmp_path):
    folder = make_cifar10(tmp_path)
    rng = np.random.default_rng(0)
    write_pickle(folder / "data_batch_1", cifar_batch(rng, 20, 100, b"fine_labels"))
    with pytest.raises(DataError, match="data_batch_1 lacks b'data' or b'labels'"):
        data.build(DataSpec(dataset="cifar10", path=folder), batch_size=8)
    bad = cifar_batch(rng, 20, 10, b"labels")
    bad[b"data"] = bad[b"data"][:, :1000]
    write_pickle(folder / "data_batch_1", bad)
    with pytest.raises(DataError, match=r"uint8 \(N, 3072\)"):
        data.build(DataSpec(dataset="cifar10", path=folder), batch_size=8)
    bad = cifar_batch(rng, 20, 10, b"labels")
    bad[b"labels"] = bad[b"labels"][:5]
    write_pickle(folder / "data_batch_1", bad)
    with pytest.raises(DataError, match="20 images but labels"):
        data.build(DataSpec(dataset="cifar10", path=folder), batch_size=8)


class RunsCode:
    def __reduce__(self):
        return (subprocess.call, (["true"],))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    folder = make_cifar10(tmp_path)
    rng = np.random.default_rng(0)
    batch = cifar_batch(rng, 20, 10, b"labels")
    batch[b"extra"] = RunsCode()
    write_pickle(folder / "data_batch_1", batch)
    with pytest.raises(DataError, match=r"refusing to load \S+\.call"):
        data.build(DataSpec(dataset="cifar10", path=folder), batch_size=8)


# --- imagefolder ------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def make_folder(root: Path, per_class: int, size=(20, 12), ext=".png") -> None:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, colour).save(root / name / f"{i}{ext}")


def test_imagefolder_with_train_and_val(tmp_path):
    make_folder(tmp_path / "train", 4)
    make_folder(tmp_path / "val", 2, ext=".jpg")
    spec = DataSpec(dataset="imagefolder", path=tmp_path, image_size=8, augment=False)
    bundle = data.build(spec, batch_size=5)
    assert bundle.class_names == ["blue", "green", "red"]
    assert bundle.train.dataset_size == 12 and bundle.val.dataset_size == 6
    assert bundle.image_size == 8 and bundle.train.images.shape == (12, 3, 8, 8)
    # Solid images stay solid through resize: class k has exactly its colour.
    for img, label in zip(bundle.train.images, bundle.train.labels, strict=True):
        colour = COLOURS[bundle.class_names[int(label)]]
        assert torch.equal(img[:, 0, 0], torch.tensor(colour, dtype=torch.uint8))
        assert bool((img == img[:, :1, :1]).all())
    assert bundle.val.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_imagefolder_without_val_splits_off_val_fraction(tmp_path):
    make_folder(tmp_path, 8)
    spec = DataSpec(dataset="imagefolder", path=tmp_path, image_size=8, val_fraction=0.25)
    a = data.build(spec, batch_size=4)
    b = data.build(spec.model_copy(update={"workers": 2}), batch_size=4)
    assert a.train.dataset_size == 18 and a.val.dataset_size == 6
    assert torch.bincount(a.val.labels).tolist() == [2, 2, 2]
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        data.build(DataSpec(dataset="imagefolder", path=tmp_path / "absent"), batch_size=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class folders in .*empty"):
        data.build(DataSpec(dataset="imagefolder", path=empty), batch_size=4)
    (empty / "cats").mkdir()
    (empty / "dogs").mkdir()
    (empty / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images in .*cats, .*dogs"):
        data.build(DataSpec(dataset="imagefolder", path=empty), batch_size=4)


def test_imagefolder_class_mismatch_between_train_and_val(tmp_path):
    make_folder(tmp_path / "train", 2)
    (tmp_path / "val" / "blue").mkdir(parents=True)
    (tmp_path / "val" / "purple").mkdir()
    with pytest.raises(
        DataError, match=r"only in train: \['green', 'red'\]; only in val: \['purple'\]"
    ):
        data.build(DataSpec(dataset="imagefolder", path=tmp_path), batch_size=4)


def test_imagefolder_corrupt_image_names_the_file(tmp_path):
    make_folder(tmp_path, 3)
    (tmp_path / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot decode .*broken.png"):
        data.build(DataSpec(dataset="imagefolder", path=tmp_path, val_fraction=0.5), batch_size=4)


def test_imagefolder_refuses_what_would_not_fit_in_memory(tmp_path, monkeypatch):
    from engine.data import resources

    make_folder(tmp_path, 3)
    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    spec = DataSpec(dataset="imagefolder", path=tmp_path, val_fraction=0.5, cache="memory")
    with pytest.raises(DataError, match="set data.cache: none to stream them from disk, or a smaller data.image_size"):
        data.build(spec, batch_size=4)


# --- names ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "suggestion"), [("cifar-10", "cifar10"), ("Shape", "shapes")])
def test_unknown_dataset_suggests_the_closest_name(name, suggestion):
    with pytest.raises(DataError, match=f"unknown dataset '{name}'; did you mean '{suggestion}'"):
        data.build(DataSpec(dataset=name), batch_size=4)


def test_torchvision_unavailable_says_what_to_use(tmp_path, monkeypatch):
    # A None entry makes `import torchvision` raise ImportError, whatever is installed.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    spec = DataSpec(dataset="torchvision:CIFAR10", path=tmp_path)
    with pytest.raises(DataError, match="torchvision is unavailable.*cifar10.*imagefolder"):
        data.build(spec, batch_size=4)


def test_drop_last_with_too_few_images_is_a_clear_error():
    with pytest.raises(DataError, match="no full batch of 500"):
        data.build(small_shapes(), batch_size=500, drop_last=True)


# --- test split ---------------------------------------------------------------


def image_keys(images: torch.Tensor) -> set[bytes]:
    return {bytes(img.numpy()) for img in images}


def test_no_test_split_unless_asked():
    assert data.build(small_shapes(), batch_size=16).test is None


def test_shapes_test_fraction_holds_out_a_stratified_disjoint_test_split():
    bundle = data.build(small_shapes(num_classes=4, test_fraction=0.2), batch_size=16)
    assert bundle.test is not None
    assert bundle.train.dataset_size == 96 and bundle.test.dataset_size == 24
    assert sorted(set(bundle.test.labels.tolist())) == [0, 1, 2, 3]
    train, val, test = (image_keys(s.images) for s in (bundle.train, bundle.val, bundle.test))
    assert not (test & train) and not (test & val)
    again = data.build(small_shapes(num_classes=4, test_fraction=0.2), batch_size=16)
    assert torch.equal(again.test.images, bundle.test.images)
    # Evaluation splits are neither shuffled nor augmented.
    assert torch.equal(torch.cat([y for _, y in bundle.test]), bundle.test.labels)


def test_test_fraction_leaving_a_class_empty_is_a_clear_error():
    with pytest.raises(DataError, match=r"test_fraction=0.02 leaves a class without test.*'circle' \(20 images\).*at least 0.05"):
        data.build(small_shapes(train_size=120, test_fraction=0.02), batch_size=16)
    with pytest.raises(DataError, match=r"'b' \(1 images\); every class needs at least 2 images"):
        split_indices(np.array([0, 0, 0, 1]), val_fraction=0.1, test_fraction=0.3, seed=0, class_names=["a", "b"])


def test_imagefolder_test_folder_is_the_test_split(tmp_path):
    make_folder(tmp_path / "train", 4)
    make_folder(tmp_path / "val", 2)
    make_folder(tmp_path / "test", 3, ext=".jpg")
    spec = DataSpec(dataset="imagefolder", path=tmp_path, image_size=8)
    bundle = data.build(spec, batch_size=5)
    assert bundle.train.dataset_size == 12 and bundle.val.dataset_size == 6
    assert bundle.test.dataset_size == 9 and bundle.test.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    with pytest.raises(DataError, match="has its own test split .*test.*remove data.test_fraction"):
        data.build(spec.model_copy(update={"test_fraction": 0.2}), batch_size=5)
    (tmp_path / "test" / "purple").mkdir()
    with pytest.raises(DataError, match=r"only in test: \['purple'\]"):
        data.build(spec, batch_size=5)


def test_imagefolder_without_test_folder_carves_test_and_val(tmp_path):
    make_folder(tmp_path, 10)
    spec = DataSpec(dataset="imagefolder", path=tmp_path, image_size=8, val_fraction=0.2, test_fraction=0.3)
    bundle = data.build(spec, batch_size=4)
    counts = [torch.bincount(s.labels, minlength=3).tolist() for s in (bundle.train, bundle.val, bundle.test)]
    assert counts == [[5, 5, 5], [2, 2, 2], [3, 3, 3]]
    # Without a test split the val choice is what it always was.
    plain = data.build(spec.model_copy(update={"test_fraction": 0.0}), batch_size=4)
    assert plain.test is None and plain.val.dataset_size == 6


def test_cifar_has_its_own_test_split(tmp_path):
    make_cifar10(tmp_path)
    with pytest.raises(DataError, match="cifar10 has its own test split .*test_batch"):
        data.build(DataSpec(dataset="cifar10", path=tmp_path, test_fraction=0.1), batch_size=8)


def test_val_and_test_fractions_must_leave_training_images():
    from engine.config import spec_from_dict
    from engine.errors import PresetError

    with pytest.raises(PresetError, match="data: val_fraction 0.5 \\+ test_fraction 0.5 leave no training"):
        spec_from_dict({"data": {"val_fraction": 0.5, "test_fraction": 0.5}})
