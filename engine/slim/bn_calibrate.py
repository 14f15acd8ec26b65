"""BatchNorm running statistics re-estimated for the weights as they are now.

During sparse training gamma shrinks by a large fraction per step; BatchNorm's running mean and
variance (an exponential average with momentum 0.1, about the last ten steps) then describe
activations that no longer exist, and eval-mode accuracy falls to chance while the training loss
stays low. Re-estimating the statistics at epoch end (a cumulative average over a few training
batches, no gradients) makes the val accuracy, the pruned-at-target accuracy and the saved
checkpoint describe the model that was actually trained. Training itself never reads running
statistics, so its trajectory is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

CALIBRATION_SAMPLES = 2000  # training images the statistics are re-estimated on


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable, device: torch.device, amp: torch.dtype | None = None,
                dist_info: Any = None) -> int:
    """Replace every BatchNorm's running statistics by their average over `batches`; returns images seen."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.eval()
    for m in bns:
        m.train()
    seen = 0
    try:
        for x, _ in batches:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                model(x)
            seen += x.shape[0]
    finally:
        for m, was in modes.items():
            m.training = was
        for m, momentum in momenta.items():
            m.momentum = momentum
    if dist_info is not None and getattr(dist_info, "enabled", False):
        import torch.distributed as dist

        for m in bns:  # every rank ends with the same statistics (the average of theirs)
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf /= dist_info.world_size
    return seen


def calibration_samples(loader: Any, samples: int = CALIBRATION_SAMPLES) -> int:
    """`samples`, but at most a quarter of the split (at least a batch): cheap on small data."""
    batch = getattr(loader, "batch_size", None) or 1
    try:
        size = len(loader) * batch
    except TypeError:
        return samples
    return int(min(samples, max(batch, size // 4)))


def first_batches(loader: Iterable, samples: int) -> Iterable:
    """The first batches of `loader` holding about `samples` images."""
    seen = 0
    for x, y in loader:
        if seen >= samples:
            break
        yield x, y
        seen += x.shape[0]


class RecalibrateBN:
    """Trainer callback: BatchNorm statistics re-estimated on training images before each val pass
    (`samples`, at most a quarter of the training split)."""

    def __init__(self, samples: int = 2000) -> None:
        self.samples = int(samples)

    def before_eval(self, trainer: Any, epoch: int) -> None:
        train = trainer.data.train
        recalibrate(trainer.model, first_batches(train, calibration_samples(train, self.samples)), trainer.device,
                    trainer.amp_dtype, trainer.dist)
