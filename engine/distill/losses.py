"""Distillation losses as pure functions, always evaluated in float32.

Softmax with a temperature, KL divergence and cosine similarity lose too much
precision in fp16/bf16, so every function here casts its inputs to float32 and
turns autocast off for its own ops, whatever context it is called from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.errors import DistillError


def _fp32_region(t: Tensor) -> torch.autocast:
    return torch.autocast(device_type=t.device.type, enabled=False)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    T: float = 2.0,
    w_kd: float = 0.25,
    w_ce: float = 0.75,
) -> tuple[Tensor, dict[str, float]]:
    """Hinton et al. distillation loss: ``w_ce*CE + w_kd*T^2*KL(p_teacher || p_student)``.

    Both terms are batch means; the T^2 factor keeps the soft-target gradient
    magnitude independent of the temperature. Returns the weighted total and the
    unweighted terms ``{"ce": CE, "kd": T^2*KL}``.
    """
    total, terms = kd_loss_terms(student_logits, teacher_logits, labels, T, w_kd, w_ce)
    return total, {k: float(v) for k, v in terms.items()}


def kd_loss_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    T: float = 2.0,
    w_kd: float = 0.25,
    w_ce: float = 0.75,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``kd_loss`` with the terms as detached 0-d tensors, so a caller can read
    several terms with one device sync instead of one per term."""
    if T <= 0:
        raise DistillError(f"kd temperature T must be > 0, got {T}; use e.g. T: 2")
    if student_logits.shape != teacher_logits.shape:
        raise DistillError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; teacher and student must predict "
            "the same classes"
        )
    with _fp32_region(student_logits):
        s = student_logits.float()
        t = teacher_logits.detach().float()
        ce = F.cross_entropy(s, labels)
        kl = F.kl_div(
            F.log_softmax(s / T, dim=-1),
            F.log_softmax(t / T, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        kd = kl * (T * T)
        total = w_ce * ce + w_kd * kd
    return total, {"ce": ce.detach(), "kd": kd.detach()}


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy in float32 (the plain term when distillation has no kd part)."""
    with _fp32_region(logits):
        return F.cross_entropy(logits.float(), labels)


def cosine_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Batch mean of ``1 - cos(flatten(s_i), flatten(t_i))`` (CosineEmbeddingLoss, target 1)."""
    _check_same_shape(student_feat, teacher_feat, "cosine")
    with _fp32_region(student_feat):
        s = student_feat.float().flatten(1)
        t = teacher_feat.detach().float().flatten(1)
        return (1.0 - F.cosine_similarity(s, t, dim=1)).mean()


def hint_loss(regressed_student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNets hint loss: mean squared error between regressed student and teacher maps."""
    _check_same_shape(regressed_student_feat, teacher_feat, "hint")
    with _fp32_region(regressed_student_feat):
        return F.mse_loss(regressed_student_feat.float(), teacher_feat.detach().float())


def _check_same_shape(s: Tensor, t: Tensor, kind: str) -> None:
    # Broadcasting in mse_loss would silently compare the wrong elements.
    if s.shape != t.shape:
        raise DistillError(
            f"{kind} loss needs equal shapes, got student {tuple(s.shape)} and teacher "
            f"{tuple(t.shape)}; give the feature term a projection/regressor"
        )
