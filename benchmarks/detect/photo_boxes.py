"""A YOLO-format detection set of real photographs pasted onto real photographs (no download).

Objects: five colour photos that scikit-image ships (chelsea the cat, coffee, rocket, astronaut,
the left view of stereo_motorcycle), one class each. Backgrounds: scikit-learn's sample photos
(china, flower), matplotlib's grace_hopper.jpg and scikit-image's immunohistochemistry,
hubble_deep_field and retina. Each image is a random crop of a background, resized to `size` px,
with 1-3 objects pasted at 18-55% of the side: each a random crop of 75-100% of its photo, its
aspect jittered by up to 25%, maybe flipped, its brightness scaled by 0.75-1.25, overlapping the
others little. The label is the pasted rectangle.

No background pixel is shared between splits: train crops come from the left 60% of every
background photo, val crops from the right 40%. The objects are the same five photos in both
splits (one photo per class), differing in crop, scale, aspect, flip and brightness: the set
measures how well a detector learns and keeps these objects, not open-world generalisation.

Needs scikit-image, scikit-learn and matplotlib (benchmark-only; installed in the detection
environment as Ultralytics' dependencies or beside them).

    python benchmarks/detect/photo_boxes.py [OUT] [--size 160] [--train 480] [--val 120] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

OBJECTS = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle")
BACKGROUNDS = ("china", "flower", "grace_hopper", "immunohistochemistry", "hubble_deep_field", "retina")
TRAIN_SHARE = 0.6  # of each background photo's width


def photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    out: dict[str, np.ndarray] = {}
    for name in ("chelsea", "coffee", "rocket", "astronaut", "immunohistochemistry", "hubble_deep_field", "retina"):
        out[name] = getattr(skimage.data, name)()
    out["motorcycle"] = skimage.data.stereo_motorcycle()[0]
    sample = load_sample_images()
    for path, image in zip(sample.filenames, sample.images, strict=True):
        out[Path(path).stem] = image
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        out["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    return {k: np.ascontiguousarray(v[..., :3]) for k, v in out.items()}


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / max(1, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def background(photo: np.ndarray, split: str, size: int, rng: np.random.Generator) -> Image.Image:
    h, w = photo.shape[:2]
    cut = int(w * TRAIN_SHARE)
    region = photo[:, :cut] if split == "train" else photo[:, cut:]
    rh, rw = region.shape[:2]
    side = int(rng.integers(min(rh, rw) // 2, min(rh, rw) + 1))
    y, x = int(rng.integers(0, rh - side + 1)), int(rng.integers(0, rw - side + 1))
    return Image.fromarray(region[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BILINEAR)


def pasted(photo: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    h, w = photo.shape[:2]
    share = float(rng.uniform(0.75, 1.0))
    ch, cw = int(h * share), int(w * share)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = photo[y:y + ch, x:x + cw].astype(np.float32) * float(rng.uniform(0.75, 1.25))
    img = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = rng.uniform(0.18, 0.55) * size
    aspect = (cw / ch) * float(rng.uniform(0.8, 1.25))
    ow, oh = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    return img.resize((max(8, int(ow)), max(8, int(oh))), Image.Resampling.BILINEAR)


def write(out: Path, size: int = 160, train: int = 480, val: int = 120, seed: int = 0) -> Path:
    """Write the set under `out` (images/, labels/, data.yaml); returns data.yaml's path."""
    pics = photos()
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = background(pics[BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]], split, size, rng)
            boxes: list[tuple[int, int, int, int]] = []
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                cls = int(rng.integers(len(OBJECTS)))
                obj = pasted(pics[OBJECTS[cls]], size, rng)
                for _try in range(20):
                    x = int(rng.integers(0, size - obj.width + 1))
                    y = int(rng.integers(0, size - obj.height + 1))
                    box = (x, y, x + obj.width, y + obj.height)
                    if all(_overlap(box, b) < 0.3 for b in boxes):
                        break
                else:
                    continue
                img.paste(obj, (x, y))
                boxes.append(box)
                cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {obj.width / size:.6f} {obj.height / size:.6f}")
            img.save(out / "images" / split / f"{i:05d}.jpg", quality=92)
            (out / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    yaml_path = out / "data.yaml"
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(OBJECTS))
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, nargs="?", help="the folder to write (default: a new temporary one)")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--train", type=int, default=480)
    p.add_argument("--val", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.out is None:
        import tempfile

        a.out = Path(tempfile.mkdtemp(prefix="photo_boxes-"))
    print(write(a.out, a.size, a.train, a.val, a.seed))


if __name__ == "__main__":
    main()
