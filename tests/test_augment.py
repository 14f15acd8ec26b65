"""Augmentation as a list of named ops: parsing, messages, determinism, and what each op does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.config import DataSpec, spec_from_dict
from engine.data import augment_spec, decode
from engine.data.augment import Augmenter
from engine.data.order import augmentation_generator
from engine.errors import PresetError


def batch_of(n: int = 16, c: int = 3, h: int = 10, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def run(ops, batch: torch.Tensor, seed: int = 7, fill=(10, 20, 30)):
    aug = Augmenter(ops, batch.shape[-1], fill[: batch.shape[1]])
    drawn = aug.draw(torch.Generator().manual_seed(seed), batch.shape[0])
    return aug.apply(batch, drawn), drawn


# --- the list and its messages ---------------------------------------------------


def test_true_false_and_named_lists():
    assert augment_spec.parse(True) == [
        {"random_crop": {"padding": 4, "padding_mode": "zeros"}},
        {"horizontal_flip": {"p": 0.5}},
    ]
    assert augment_spec.parse(False) == []
    ops = augment_spec.parse(["random_crop", {"cutout": {"size": 0.25}}, {"color_jitter": None}])
    assert ops[1] == {"cutout": {"size": 0.25, "p": 1.0}}
    assert ops[2]["color_jitter"]["brightness"] == 0.4
    assert augment_spec.parse(ops) == ops  # idempotent: a resolved spec.yaml reads back the same
    # The preset keeps the resolved list, and true still means crop + flip.
    assert DataSpec().augment == augment_spec.parse(True)
    assert DataSpec(augment=["random_crop"]).augment == [{"random_crop": {"padding": 4, "padding_mode": "zeros"}}]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["horizontal_flp"], "unknown augmentation 'horizontal_flp'; did you mean 'horizontal_flip'?"),
        (["flip"], "unknown augmentation 'flip'.*ops: random_crop, horizontal_flip"),
        ([{"random_crop": {"pad": 2}}], "random_crop has no parameter 'pad'; did you mean 'padding'?"),
        ([{"random_crop": {"padding": -1}}], "random_crop.padding must be a whole number >= 0"),
        ([{"random_crop": {"padding_mode": "wrap"}}], "padding_mode must be one of zeros, reflect, edge"),
        ([{"horizontal_flip": {"p": 2}}], r"horizontal_flip.p must lie in \[0.0, 1.0\]"),
        ([{"random_resized_crop": {"scale": [0.5, 0.1]}}], "low must not exceed high"),
        (["horizontal_flip", "random_resized_crop"], "random_resized_crop .* list it first"),
        ([{"cutout": 3}], "parameters are a mapping"),
        ("random_crop", "augment is true, false or a list of ops"),
    ],
)
def test_bad_augmentation_is_a_preset_error_naming_the_fix(value, message):
    with pytest.raises(PresetError, match=message) as err:
        spec_from_dict({"data": {"augment": value}})
    assert "data.augment" in str(err.value)


# --- determinism -------------------------------------------------------------------


def test_same_seed_same_pixels_and_batches_independent():
    batch = batch_of()
    ops = ["random_crop", "horizontal_flip", "cutout", "color_jitter"]
    a, _ = run(ops, batch, seed=3)
    b, _ = run(ops, batch, seed=3)
    c, _ = run(ops, batch, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1 = augmentation_generator(1, 2, 0, 5).initial_seed()
    assert g1 == augmentation_generator(1, 2, 0, 5).initial_seed()
    others = {augmentation_generator(*args).initial_seed() for args in [(1, 2, 0, 6), (1, 3, 0, 5), (1, 2, 1, 5), (2, 2, 0, 5)]}
    assert g1 not in others and len(others) == 4


# --- what each op does ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zeros", "reflect", "edge"])
def test_random_crop_and_flip_match_per_sample_padding(mode):
    batch = batch_of()
    out, drawn = run([{"random_crop": {"padding": 4, "padding_mode": mode}}, "horizontal_flip"], batch)
    torch_mode = {"zeros": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    padded = F.pad(batch.float(), (4, 4, 4, 4), mode=torch_mode).to(torch.uint8)
    crop, flip = drawn
    for i in range(batch.shape[0]):
        oy, ox = int(crop["oy"][i]), int(crop["ox"][i])
        ref = padded[i, :, oy : oy + 10, ox : ox + 12]
        if flip["flip"][i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)
    assert flip["flip"].any() and not flip["flip"].all()


def test_flips_with_probability():
    batch = batch_of()
    out, _ = run([{"horizontal_flip": {"p": 0.0}}, {"vertical_flip": {"p": 1.0}}], batch)
    assert torch.equal(out, batch.flip(-2))


def test_cutout_paints_one_square_of_the_mean_colour():
    batch = torch.full((8, 3, 16, 16), 200, dtype=torch.uint8)
    out, _ = run([{"cutout": {"size": 0.25}}], batch, fill=(10, 20, 30))
    painted = (out != 200).all(dim=1)  # (B, H, W)
    for i in range(8):
        ys, xs = painted[i].nonzero(as_tuple=True)
        assert 1 <= len(ys) <= 16 and len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert out[i, :, ys[0], xs[0]].tolist() == [10, 20, 30]
    off, _ = run([{"cutout": {"size": 0.25, "p": 0.0}}], batch)
    assert torch.equal(off, batch)


def test_color_jitter_scales_brightness_per_image():
    batch = torch.full((6, 3, 4, 4), 100, dtype=torch.uint8)
    out, drawn = run([{"color_jitter": {"brightness": 0.5, "contrast": 0.0, "saturation": 0.0}}], batch)
    factors = drawn[0]["brightness"]
    assert bool(((factors >= 0.5) & (factors <= 1.5)).all())
    assert torch.equal(out[:, 0, 0, 0], (100 * factors).round().to(torch.uint8))
    grey = torch.full((2, 3, 4, 4), 50, dtype=torch.uint8)
    assert torch.equal(run([{"color_jitter": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.9}}], grey)[0], grey)


def test_random_resized_crop_in_memory():
    batch = batch_of(h=12, w=12)
    whole, _ = run([{"random_resized_crop": {"scale": [1.0, 1.0], "ratio": [1.0, 1.0]}}], batch)
    assert torch.equal(whole, batch)  # the whole image, resized to its own size
    quarter = [{"random_resized_crop": {"scale": [0.25, 0.25], "ratio": [1.0, 1.0]}}]
    out, drawn = run(quarter, batch)
    aug = Augmenter(quarter, 12, (0, 0, 0))
    assert out.shape == batch.shape and not torch.equal(out, batch)
    for i in range(4):
        x0, y0, w, h = aug.source_box(drawn, i, 12, 12)
        assert (w, h) == (6, 6) and 0 <= x0 <= 6 and 0 <= y0 <= 6


def test_random_resized_crop_boxes_stay_inside_and_respect_scale():
    aug = Augmenter([{"random_resized_crop": {"scale": [0.1, 0.6], "ratio": [0.5, 2.0]}}], 32, (0, 0, 0))
    drawn = aug.draw(torch.Generator().manual_seed(0), 200)
    for i in range(200):
        x0, y0, w, h = aug.source_box(drawn, i, 300, 200)
        assert 0 <= x0 and x0 + w <= 300 and 0 <= y0 and y0 + h <= 200
        assert 0.09 <= w * h / 60000 <= 0.61


def test_random_resized_crop_cuts_the_full_resolution_file(tmp_path):
    # A 64x64 file whose left half is red and right half blue; at 8x8 the cut region
    # comes from the file itself, not from an 8x8 copy.
    img = Image.new("RGB", (64, 64), (255, 0, 0))
    img.paste((0, 0, 255), (32, 0, 64, 64))
    path = tmp_path / "half.png"
    img.save(path)
    left = decode.image(str(path), 8, lambda w, h: (0, 0, 32, 64))
    assert left.shape == (3, 8, 8)
    assert left[0, :, :6].min() == 255 and left[2, :, :6].max() == 0  # (the filter reaches past the edge)
    whole = decode.image(str(path), 8)
    assert whole[0, :, :3].min() == 255 and whole[2, :, 5:].min() == 255
