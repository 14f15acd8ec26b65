"""Train-time augmentation done per batch in one gather, not per sample in Python."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(batch: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop from the zero-padded image plus a random horizontal flip, per sample.

    `batch` is uint8 (B, C, H, W). The crop offset and the flip are folded into one
    flat index per output pixel, so the whole batch is a single `torch.take`; that is
    several times cheaper than slicing sample by sample. Padding with 0 before
    normalising matches the usual RandomCrop(padding=4) + ToTensor + Normalize order.
    """
    b, c, h, w = batch.shape
    if b == 0:
        return batch
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(batch, (pad, pad, pad, pad)) if pad > 0 else batch.contiguous()
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    col = torch.arange(w)
    cols = ox[:, None] + torch.where(flip[:, None], (w - 1) - col, col)  # (B, W)
    rows = (oy[:, None] + torch.arange(h)) * wp  # (B, H)
    base = (torch.arange(b) * (c * hp * wp))[:, None, None, None] + (torch.arange(c) * (hp * wp))[
        None, :, None, None
    ]
    index = base + rows[:, None, :, None] + cols[:, None, None, :]
    return torch.take(padded, index)
