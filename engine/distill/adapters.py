"""Adapters that bring a (student, teacher) feature pair to one shape.

Each adapter is sized once from the shapes seen on a dry forward pass, so a
pair that cannot be matched fails before any training step.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import DistillError

PROJECTIONS = ("pool", "linear")
REGRESSORS = ("1x1", "3x3")

# A flattened linear projection of large maps would be enormous (C*H*W squared);
# past this many weights the projection works on pooled vectors instead.
MAX_FLAT_LINEAR_WEIGHTS = 1 << 24

Shape = tuple[int, ...]


class FeatureAdapter(nn.Module):
    """Reduces both features the same way, then maps the student's with ``proj``.

    ``reduce``: "none" (keep), "gap" (global average pool to (N, C)),
    "flatten" (to (N, C*H*W)), or "resize" (adaptive average pool of any map
    larger than ``size`` down to ``size``).
    """

    def __init__(
        self,
        reduce: str,
        proj: nn.Module | None,
        description: str,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.reduce = reduce
        self.size = size
        self.proj = proj
        self.description = description

    def _reduce(self, x: Tensor) -> Tensor:
        if self.reduce == "gap":
            return x.flatten(2).mean(-1) if x.dim() > 2 else x
        if self.reduce == "flatten":
            return x.flatten(1)
        if self.reduce == "resize" and tuple(x.shape[-2:]) != self.size:
            return F.adaptive_avg_pool2d(x, self.size)
        return x

    def forward(self, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._reduce(student), self._reduce(teacher)
        if self.proj is not None:
            s = self.proj(s)
        return s, t

    def extra_repr(self) -> str:
        return self.description


def _pair(s_name: str, s_shape: Shape, t_name: str, t_shape: Shape) -> str:
    return f"student {s_name!r} {tuple(s_shape[1:])} and teacher {t_name!r} {tuple(t_shape[1:])}"


def build_cosine_adapter(
    s_name: str, s_shape: Shape, t_name: str, t_shape: Shape, projection: str = "pool"
) -> FeatureAdapter:
    """Adapter for a cosine term; shapes include the batch dimension.

    Equal shapes are compared directly. Otherwise ``pool`` averages maps to
    channel vectors (channel counts must agree) and ``linear`` learns a map from
    the student's vector to the teacher's: flattened maps when the spatial sizes
    agree (and the layer stays reasonably small), pooled channel vectors if not.
    """
    if projection not in PROJECTIONS:
        raise DistillError(
            f"cosine term {s_name!r}->{t_name!r}: projection {projection!r} is not one of "
            f"{', '.join(PROJECTIONS)}"
        )
    pair = _pair(s_name, s_shape, t_name, t_shape)
    if len(s_shape) < 2 or len(t_shape) < 2:
        raise DistillError(f"cosine term needs per-sample features, got {pair}")
    if s_shape[1:] == t_shape[1:]:
        return FeatureAdapter("none", None, f"cosine {pair}: direct")
    cs, ct = s_shape[1], t_shape[1]
    if projection == "pool":
        if cs != ct:
            raise DistillError(
                f"cosine term with projection 'pool' needs equal channel counts, got {pair}; "
                "use projection: linear to learn a student->teacher projection"
            )
        return FeatureAdapter("gap", None, f"cosine {pair}: both global-average-pooled to {cs}")
    same_spatial = len(s_shape) > 2 and s_shape[2:] == t_shape[2:]
    n_in, n_out = math.prod(s_shape[1:]), math.prod(t_shape[1:])
    if same_spatial and n_in * n_out <= MAX_FLAT_LINEAR_WEIGHTS:
        return FeatureAdapter(
            "flatten",
            nn.Linear(n_in, n_out),
            f"cosine {pair}: flattened, linear projection {n_in}->{n_out}",
        )
    why = "flattened would need too many weights" if same_spatial else "spatial sizes differ"
    return FeatureAdapter(
        "gap",
        nn.Linear(cs, ct),
        f"cosine {pair}: global-average-pooled ({why}), linear projection {cs}->{ct}",
    )


def build_hint_adapter(
    s_name: str, s_shape: Shape, t_name: str, t_shape: Shape, regressor: str = "1x1"
) -> FeatureAdapter:
    """FitNets regressor from the student's map to the teacher's; shapes include batch.

    4-D maps get a conv (1x1 or 3x3, padded to keep H and W) from student to
    teacher channels; if spatial sizes differ, the larger map is adaptive-average
    pooled to the smaller one first. 2-D vectors get a linear regressor (1x1 only).
    """
    if regressor not in REGRESSORS:
        raise DistillError(
            f"hint term {s_name!r}->{t_name!r}: regressor {regressor!r} is not one of "
            f"{', '.join(REGRESSORS)}"
        )
    pair = _pair(s_name, s_shape, t_name, t_shape)
    if len(s_shape) == 4 and len(t_shape) == 4:
        cs, ct = s_shape[1], t_shape[1]
        k = 1 if regressor == "1x1" else 3
        conv = nn.Conv2d(cs, ct, kernel_size=k, padding=k // 2)
        s_hw, t_hw = tuple(s_shape[2:]), tuple(t_shape[2:])
        if s_hw == t_hw:
            return FeatureAdapter(
                "none", conv, f"hint {pair}: {regressor} conv regressor {cs}->{ct}"
            )
        size = (min(s_hw[0], t_hw[0]), min(s_hw[1], t_hw[1]))
        return FeatureAdapter(
            "resize",
            conv,
            f"hint {pair}: spatial sizes differ, larger map adaptive-avg-pooled to "
            f"{size[0]}x{size[1]}, then {regressor} conv regressor {cs}->{ct}",
            size=size,
        )
    if len(s_shape) == 2 and len(t_shape) == 2:
        if regressor != "1x1":
            raise DistillError(
                f"hint term: a {regressor} regressor needs 4-D feature maps, got {pair}; "
                "use regressor: 1x1 for feature vectors"
            )
        ds, dt = s_shape[1], t_shape[1]
        return FeatureAdapter(
            "none", nn.Linear(ds, dt), f"hint {pair}: linear regressor {ds}->{dt}"
        )
    raise DistillError(
        f"hint term cannot match {pair}: both must be 4-D feature maps (N, C, H, W) or both "
        "(N, D) vectors; tap modules of the same kind (e.g. conv blocks in both models)"
    )
