"""Deep-Compression-style compression: global magnitude pruning, then k-means weight sharing per layer.

1. Global unstructured magnitude pruning of every conv/linear weight to a target sparsity
   (torch.nn.utils.prune.global_unstructured with L1, made permanent with prune.remove).
2. Optional finetuning with the zeros held (`KeepZeros`: masked gradients, re-zeroed after
   each step), so the checkpoint format never changes.
3. Each layer's nonzero weights are clustered into 2**bits shared values (kmeans_1d).

This shrinks the stored file, not the time: the weights decode to dense tensors, and dense CPU
kernels multiply the zeros like any other number. Only sparse kernels (or hardware built for
sparsity) would turn the zeros into speed; channel pruning (slimming) is what makes dense
inference faster.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from engine.deploy.compressed import Shared
from engine.deploy.kmeans import kmeans_1d

NOT_FASTER = ("unstructured sparsity does not speed up dense CPU inference: the zeros shrink the file, "
              "but the decoded layers are dense and every multiply still runs")


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv and linear layer with a weight (depthwise and grouped convs included)."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and getattr(m, "weight", None) is not None]


def magnitude_prune(model: nn.Module, sparsity: float) -> float:
    """Zero the `sparsity` fraction of smallest-magnitude conv/linear weights, globally; returns the
    fraction now zero."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("the model has no conv or linear layer to compress")
    if sparsity > 0:
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                  amount=float(sparsity))
        for _, m in layers:
            prune.remove(m, "weight")  # permanent: a plain weight with zeros, no mask or hook left
    return sparsity_of(model)


def sparsity_of(model: nn.Module) -> float:
    total = zeros = 0
    for _, m in weight_layers(model):
        total += m.weight.numel()
        zeros += int((m.weight == 0).sum())
    return zeros / max(1, total)


class KeepZeros:
    """Trainer callback: pruned weights get no gradient and stay exactly zero through every step."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.masks: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: object) -> None:
        # the model as training starts (a resumed stage has loaded its last.pt by now)
        self.masks = {n: (m.weight != 0) for n, m in weight_layers(self.model)}

    def after_backward(self, trainer: object) -> None:
        for n, m in weight_layers(self.model):
            if m.weight.grad is not None:
                m.weight.grad.mul_(self.masks[n].to(m.weight.grad.dtype))

    def after_step(self, trainer: object) -> None:
        with torch.no_grad():
            for n, m in weight_layers(self.model):
                m.weight.mul_(self.masks[n].to(m.weight.dtype))


def share_weights(model: nn.Module, bits: int) -> dict[str, Shared]:
    """Replace each layer's nonzero weights by the nearest of 2**bits k-means centroids, in place;
    returns the encoding per state_dict key."""
    encoded: dict[str, Shared] = {}
    with torch.no_grad():
        for name, m in weight_layers(model):
            w = m.weight.detach().cpu().numpy().astype(np.float32)
            mask = (w != 0).ravel()
            codebook, codes = kmeans_1d(w.ravel()[mask], 2**bits)
            enc = Shared(tuple(w.shape), mask, codes, codebook)
            m.weight.copy_(torch.from_numpy(enc.decode()).to(m.weight.device, m.weight.dtype))
            encoded[f"{name}.weight"] = enc
    return encoded


def nonzero_params(model: nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))
