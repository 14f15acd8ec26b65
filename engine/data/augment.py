"""Train-time augmentation ops on uint8 image batches, with per-sample random parameters.

Every op draws its parameters for a whole batch from one generator (seeded by
seed, epoch, rank and batch number), then applies them to all samples at once:
the in-memory loader on its gathered batch, the streaming loader in its worker on
the batch it just decoded, so both produce the same pixels for the same seed. The
one exception is `random_resized_crop`, which the streaming loader applies while
decoding, to the full-resolution file (`source_box`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from engine.data import augment_spec

Params = dict[str, torch.Tensor]
_GRAY = (0.299, 0.587, 0.114)
_RRC_TRIES = 10


class Augmenter:
    """The parsed op list of `data.augment`, for images of `size` x `size`.

    `fill` is the dataset's mean colour as uint8 (what cutout paints: 0 after normalising).
    """

    def __init__(self, augment: Any, size: int, fill: Sequence[int]) -> None:
        self.ops = augment_spec.ops_of(augment)
        self.size = size
        self.fill = torch.tensor([int(v) for v in fill], dtype=torch.uint8)

    def __bool__(self) -> bool:
        return bool(self.ops)

    @property
    def frames_source(self) -> bool:
        """True when the first op picks the image region (applied at decode when streaming)."""
        return bool(self.ops) and self.ops[0][0] in augment_spec.FRAMING

    def draw(self, gen: torch.Generator, n: int) -> list[Params]:
        """Random parameters of every op for `n` samples, drawn in op order."""
        return [_DRAW[name](gen, n, params) for name, params in self.ops]

    def apply(self, batch: torch.Tensor, drawn: list[Params], *, framed: bool = False) -> torch.Tensor:
        """uint8 (B, C, S, S) -> uint8 (B, C, S, S). `framed`: the framing op already ran at decode.

        Consecutive crops and flips are folded into one index map per sample and done as a
        single gather (several times cheaper than one pass per op).
        """
        if batch.shape[0] == 0:
            return batch
        geometry: _Geometry | None = None
        for i, ((name, params), p) in enumerate(zip(self.ops, drawn, strict=True)):
            if framed and i == 0 and name in augment_spec.FRAMING:
                continue
            if name in _MAPS:
                geometry = geometry or _Geometry(*batch.shape)
                geometry.then(*_MAPS[name](p, params, batch.shape[-2], batch.shape[-1]))
                continue
            if geometry is not None:
                batch, geometry = geometry.gather(batch), None
            batch = _APPLY[name](batch, p, params, self)
        return geometry.gather(batch) if geometry is not None else batch

    def source_box(self, drawn: list[Params], i: int, width: int, height: int) -> tuple[int, int, int, int] | None:
        """(x0, y0, w, h) the framing op cuts from a `width` x `height` image for sample `i`."""
        if not self.frames_source:
            return None
        return _rrc_box(drawn[0], i, width, height, self.ops[0][1])


# --------------------------------------------------------------- random_crop


def _draw_crop(gen: torch.Generator, n: int, params: dict) -> Params:
    span = 2 * params["padding"] + 1
    return {"oy": torch.randint(0, span, (n,), generator=gen), "ox": torch.randint(0, span, (n,), generator=gen)}


def _source_index(pos: torch.Tensor, n: int, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source indices for positions `pos` (negative or >= n fall in the padding), and for
    zeros padding the mask of positions inside the image."""
    if mode == "reflect" and n > 1:
        period = 2 * (n - 1)
        r = pos.abs().remainder(period)
        return torch.where(r >= n, period - r, r), None
    inside = (pos >= 0) & (pos < n) if mode == "zeros" else None
    return pos.clamp(0, n - 1), inside  # edge (and reflecting a one-pixel side) repeats the edge


Map = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def _map_crop(p: Params, params: dict, h: int, w: int) -> Map:
    pad, mode = params["padding"], params["padding_mode"]
    if pad == 0:
        return None, None, None, None
    rows, row_ok = _source_index(p["oy"][:, None] - pad + torch.arange(h), h, mode)  # (B, H)
    cols, col_ok = _source_index(p["ox"][:, None] - pad + torch.arange(w), w, mode)  # (B, W)
    return rows, row_ok, cols, col_ok


# --------------------------------------------------------------- flips


def _draw_flip(gen: torch.Generator, n: int, params: dict) -> Params:
    return {"flip": torch.rand(n, generator=gen) < params["p"]}


def _mirror(flip: torch.Tensor, n: int) -> torch.Tensor:
    ramp = torch.arange(n)
    return torch.where(flip[:, None], (n - 1) - ramp, ramp)


def _map_hflip(p: Params, params: dict, h: int, w: int) -> Map:
    return None, None, _mirror(p["flip"], w), None


def _map_vflip(p: Params, params: dict, h: int, w: int) -> Map:
    return _mirror(p["flip"], h), None, None, None


class _Geometry:
    """Where each output pixel of a batch comes from: a source row per output row and a
    source column per output column, per sample, plus which of them fall in zero padding."""

    def __init__(self, b: int, c: int, h: int, w: int) -> None:
        self.rows = torch.arange(h).expand(b, h)
        self.cols = torch.arange(w).expand(b, w)
        self.row_ok: torch.Tensor | None = None
        self.col_ok: torch.Tensor | None = None
        self.changed = False

    def then(self, rows: torch.Tensor | None, row_ok: torch.Tensor | None,
             cols: torch.Tensor | None, col_ok: torch.Tensor | None) -> None:
        """Compose with an op whose output row r reads its input row rows[b, r] (same for columns)."""
        if rows is not None:
            self.rows, self.row_ok = _compose(self.rows, self.row_ok, rows, row_ok)
            self.changed = True
        if cols is not None:
            self.cols, self.col_ok = _compose(self.cols, self.col_ok, cols, col_ok)
            self.changed = True

    def gather(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.changed:
            return batch
        b, c, h, w = batch.shape
        # One source pixel per output pixel and sample, shared by the channels.
        pixel = (self.rows * w)[:, :, None] + self.cols[:, None, :]  # (B, H, W)
        flat = batch.reshape(b, c, h * w)
        out = flat.gather(2, pixel.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
        if self.row_ok is not None or self.col_ok is not None:
            row_ok = self.row_ok if self.row_ok is not None else torch.ones(b, h, dtype=torch.bool)
            col_ok = self.col_ok if self.col_ok is not None else torch.ones(b, w, dtype=torch.bool)
            if not (bool(row_ok.all()) and bool(col_ok.all())):
                out.mul_((row_ok[:, None, :, None] & col_ok[:, None, None, :]).to(out.dtype))  # black padding
        return out


def _compose(outer: torch.Tensor, outer_ok: torch.Tensor | None, inner: torch.Tensor,
             inner_ok: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    index = outer.gather(1, inner)
    ok = outer_ok.gather(1, inner) if outer_ok is not None else None
    if inner_ok is not None:
        ok = inner_ok if ok is None else ok & inner_ok
    return index, ok


# --------------------------------------------------------------- random_resized_crop


def _draw_rrc(gen: torch.Generator, n: int, params: dict) -> Params:
    return {
        "area": torch.rand(n, _RRC_TRIES, generator=gen, dtype=torch.float64),
        "aspect": torch.rand(n, _RRC_TRIES, generator=gen, dtype=torch.float64),
        "y": torch.rand(n, generator=gen, dtype=torch.float64),
        "x": torch.rand(n, generator=gen, dtype=torch.float64),
    }


def _rrc_box(p: Params, i: int, width: int, height: int, params: dict) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop rule: up to 10 tries of (area, aspect), then a centre crop."""
    lo_s, hi_s = params["scale"]
    lo_r, hi_r = math.log(params["ratio"][0]), math.log(params["ratio"][1])
    total = width * height
    for t in range(_RRC_TRIES):
        area = total * (lo_s + (hi_s - lo_s) * float(p["area"][i, t]))
        aspect = math.exp(lo_r + (hi_r - lo_r) * float(p["aspect"][i, t]))
        w = int(round(math.sqrt(area * aspect)))
        h = int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = min(int(float(p["y"][i]) * (height - h + 1)), height - h)
            x0 = min(int(float(p["x"][i]) * (width - w + 1)), width - w)
            return x0, y0, w, h
    ratio = width / height
    if ratio < params["ratio"][0]:
        w, h = width, int(round(width / params["ratio"][0]))
    elif ratio > params["ratio"][1]:
        h, w = height, int(round(height * params["ratio"][1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _apply_rrc(batch: torch.Tensor, p: Params, params: dict, aug: Augmenter) -> torch.Tensor:
    b, c, h, w = batch.shape
    out = torch.empty_like(batch)
    for i in range(b):
        x0, y0, bw, bh = _rrc_box(p, i, w, h, params)
        crop = batch[i : i + 1, :, y0 : y0 + bh, x0 : x0 + bw].to(torch.float32)
        resized = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out[i] = resized[0].round_().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------- color_jitter


def _draw_jitter(gen: torch.Generator, n: int, params: dict) -> Params:
    out = {}
    for key in ("brightness", "contrast", "saturation"):
        x = float(params[key])
        lo = max(0.0, 1.0 - x)
        out[key] = lo + (1.0 + x - lo) * torch.rand(n, generator=gen)
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    r, g, b = _GRAY
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def _apply_jitter(batch: torch.Tensor, p: Params, params: dict, aug: Augmenter) -> torch.Tensor:
    x = batch.to(torch.float32)
    view = (-1, 1, 1, 1)
    if params["brightness"] > 0:
        x = (x * p["brightness"].view(view)).clamp_(0, 255)
    if params["contrast"] > 0:
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * p["contrast"].view(view) + mean).clamp_(0, 255)
    if params["saturation"] > 0 and x.shape[1] == 3:
        g = _gray(x)
        x = ((x - g) * p["saturation"].view(view) + g).clamp_(0, 255)
    return x.round_().to(torch.uint8)


# --------------------------------------------------------------- cutout


def _draw_cutout(gen: torch.Generator, n: int, params: dict) -> Params:
    return {
        "cy": torch.rand(n, generator=gen),
        "cx": torch.rand(n, generator=gen),
        "on": torch.rand(n, generator=gen) < params["p"],
    }


def _apply_cutout(batch: torch.Tensor, p: Params, params: dict, aug: Augmenter) -> torch.Tensor:
    b, c, h, w = batch.shape
    side = max(1, int(round(params["size"] * min(h, w))))
    cy = (p["cy"] * h).long().clamp_(0, h - 1) - side // 2
    cx = (p["cx"] * w).long().clamp_(0, w - 1) - side // 2
    ys, xs = torch.arange(h), torch.arange(w)
    rows = (ys[None, :] >= cy[:, None]) & (ys[None, :] < (cy + side)[:, None])  # (B, H)
    cols = (xs[None, :] >= cx[:, None]) & (xs[None, :] < (cx + side)[:, None])  # (B, W)
    mask = rows[:, :, None] & cols[:, None, :] & p["on"][:, None, None]  # (B, H, W)
    return torch.where(mask[:, None], aug.fill.view(1, -1, 1, 1), batch)


_DRAW = {
    "random_crop": _draw_crop,
    "horizontal_flip": _draw_flip,
    "vertical_flip": _draw_flip,
    "random_resized_crop": _draw_rrc,
    "color_jitter": _draw_jitter,
    "cutout": _draw_cutout,
}
_MAPS = {"random_crop": _map_crop, "horizontal_flip": _map_hflip, "vertical_flip": _map_vflip}
_APPLY = {
    "random_resized_crop": _apply_rrc,
    "color_jitter": _apply_jitter,
    "cutout": _apply_cutout,
}
