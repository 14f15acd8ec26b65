"""One image file -> uint8 (3, S, S): the decode both imagefolder paths share.

The in-memory path and the streaming path call the same function, so a dataset
gives the same pixels whichever path `data.cache` picks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import DataError

# (width, height) of the file -> (x0, y0, w, h) to cut from it, or None for the centre fit.
BoxFn = Callable[[int, int], tuple[int, int, int, int] | None]


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # via RGBA: Pillow warns on palette transparency otherwise
    return img.convert("RGB")


def image(path: str, size: int, box: BoxFn | None = None) -> np.ndarray:
    """Decode `path` to RGB uint8 (3, size, size).

    Without a box (or when `box` returns None): resize on the shorter side and
    centre-crop. With one: that region of the file, resized to size x size. JPEGs
    decode at the smallest power-of-two reduction that still covers the output
    (Pillow's draft mode), which is most of the cost on large photos.
    """
    try:
        with Image.open(path) as img:
            region = box(*img.size) if box is not None else None
            if region is None:
                img.draft("RGB", (size, size))
                out = ImageOps.fit(_rgb(img), (size, size), Image.Resampling.BILINEAR)
            else:
                out = _cut(img, region, size)
            return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"imagefolder: cannot decode {path} ({exc}); remove or replace the file") from exc


def _cut(img: Image.Image, region: tuple[int, int, int, int], size: int) -> Image.Image:
    width, height = img.size
    x0, y0, w, h = region
    # Draft so the cut region keeps at least `size` pixels each way.
    img.draft("RGB", (max(1, math.ceil(width * size / w)), max(1, math.ceil(height * size / h))))
    sx, sy = img.size[0] / width, img.size[1] / height
    rgb = _rgb(img)
    box = (x0 * sx, y0 * sy, (x0 + w) * sx, (y0 + h) * sy)
    return rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)
