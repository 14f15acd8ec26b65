"""|gamma| of every BatchNorm: the channel importance network slimming prunes by."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.errors import PruneError

BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def is_batch_norm(module: object) -> bool:
    """A BatchNorm by what it holds: torch's (and every subclass: BatchNorm followed by an activation
    in one module, the sync variant), or a frozen one keeping gamma, beta and the running statistics
    as 1-D per-channel tensors (torchvision's and timm's FrozenBatchNorm2d and its Act variant)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    if not isinstance(module, nn.Module) or module._buffers.get("running_var", module._parameters.get("running_var")) is None:
        return False  # the common case, decided without listing the module's tensors
    own = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
    if own.get("running_mean") is None or own.get("running_var") is None:
        return False
    size = own["running_var"].shape
    return all(own[n].dim() == 1 and own[n].shape == size for n in BN_TENSORS if own.get(n) is not None)


def bn_channels(module: nn.Module) -> int:
    """A BatchNorm's channel count (frozen ones may not say it in `num_features`)."""
    n = getattr(module, "num_features", None)
    return n if isinstance(n, int) else int(module.running_var.numel())


@dataclass
class GammaStats:
    """Per-BatchNorm |gamma| (float32 numpy arrays) in module order, plus layers skipped and why."""

    layers: list[str]
    gammas: dict[str, np.ndarray]
    skipped: dict[str, str] = field(default_factory=dict)  # BN name -> reason (affine=False)

    @property
    def counts(self) -> dict[str, int]:
        return {name: int(self.gammas[name].size) for name in self.layers}

    @property
    def total(self) -> int:
        return int(sum(g.size for g in self.gammas.values()))

    def all(self) -> np.ndarray:
        """Every |gamma| concatenated in layer order (for histograms and global percentiles)."""
        if not self.layers:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([self.gammas[name] for name in self.layers])


def _no_bn_error(model: nn.Module) -> PruneError:
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    folded = (
        " If this is an inference export with BatchNorm folded into the convs, load the training "
        "checkpoint instead." if convs and all(m.bias is not None for m in convs) else ""
    )
    return PruneError(
        f"{type(model).__name__} has no BatchNorm layers, so network slimming has nothing to score: it "
        "ranks channels by BatchNorm |gamma|. Add BatchNorm after each conv and sparse-train, or use "
        f"another criterion (magnitude / L1-norm filter pruning, not built into slimlab).{folded}"
    )


def gamma_stats(model: nn.Module) -> GammaStats:
    """|gamma| of every affine BatchNorm of `model` (frozen ones too: see `is_batch_norm`); BatchNorms
    with affine=False are skipped and reported."""
    layers: list[str] = []
    gammas: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name, m in model.named_modules():
        if not is_batch_norm(m):
            continue
        if m.weight is None:
            skipped[name] = "affine=False (no gamma)"
            continue
        with torch.no_grad():
            gammas[name] = m.weight.detach().abs().float().cpu().numpy()
        layers.append(name)
    if not layers:
        if skipped:
            raise PruneError(
                f"every BatchNorm of {type(model).__name__} has affine=False ({', '.join(list(skipped)[:3])}"
                f"{', ...' if len(skipped) > 3 else ''}): there is no gamma to rank channels by. "
                "Use affine BatchNorm and sparse-train"
            )
        raise _no_bn_error(model)
    return GammaStats(layers, gammas, skipped)
