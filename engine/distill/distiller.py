"""The Distiller: a trainer loss function and callback that distils a teacher into a student."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from engine.distill.adapters import (
    PROJECTIONS,
    REGRESSORS,
    FeatureAdapter,
    build_cosine_adapter,
    build_hint_adapter,
)
from engine.distill.losses import ce_loss, cosine_loss, hint_loss, kd_loss_terms
from engine.distill.taps import FeatureTaps
from engine.errors import DistillError

DEFAULT_KD: Mapping[str, float] = MappingProxyType({"T": 2.0, "w_kd": 0.25, "w_ce": 0.75})
FEATURE_TYPES = ("cosine", "hint")
_FEATURE_KEYS = ("type", "student", "teacher", "weight", "projection", "regressor")


@dataclass(frozen=True)
class FeatureTerm:
    """One feature-matching term: a student tap, a teacher tap and how to compare them."""

    type: str
    student: str
    teacher: str
    weight: float = 1.0
    projection: str = "pool"
    regressor: str = "1x1"

    @property
    def name(self) -> str:
        """Key of this term in the per-step metrics, e.g. ``hint:layer3``."""
        if self.student == self.teacher:
            return f"{self.type}:{self.student}"
        return f"{self.type}:{self.student}->{self.teacher}"


def parse_kd(kd: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Validated ``{"T", "w_kd", "w_ce"}`` (missing keys take the defaults), or None."""
    if kd is None:
        return None
    unknown = set(kd) - set(DEFAULT_KD)
    if unknown:
        raise DistillError(
            f"kd has unknown keys {sorted(unknown)}; allowed: {', '.join(DEFAULT_KD)}"
        )
    out = {k: float(kd.get(k, v)) for k, v in DEFAULT_KD.items()}
    if out["T"] <= 0:
        raise DistillError(f"kd.T must be > 0, got {out['T']}; the usual range is 1-8")
    if out["w_kd"] < 0 or out["w_ce"] < 0:
        raise DistillError(f"kd weights must be >= 0, got w_kd={out['w_kd']}, w_ce={out['w_ce']}")
    return out


def parse_feature_term(spec: Mapping[str, Any], index: int = 0) -> FeatureTerm:
    """A FeatureTerm from a preset dict, or a DistillError saying which key is wrong.

    ``projection`` (cosine only) and ``regressor`` (hint only) are both accepted on
    every term, because a validated preset carries the defaults of both; the one
    that does not apply is ignored.
    """
    where = f"features[{index}]"
    unknown = set(spec) - set(_FEATURE_KEYS)
    if unknown:
        raise DistillError(
            f"{where} has unknown keys {sorted(unknown)}; allowed: {', '.join(_FEATURE_KEYS)}"
        )
    for key in ("type", "student", "teacher"):
        if not isinstance(spec.get(key), str):
            raise DistillError(f"{where} needs {key!r} (a string), got {spec.get(key)!r}")
    kind = spec["type"]
    if kind not in FEATURE_TYPES:
        raise DistillError(f"{where}.type {kind!r} is not one of {', '.join(FEATURE_TYPES)}")
    projection = spec.get("projection", "pool")
    regressor = spec.get("regressor", "1x1")
    if projection not in PROJECTIONS:
        raise DistillError(
            f"{where}.projection {projection!r} is not one of {', '.join(PROJECTIONS)}"
        )
    if regressor not in REGRESSORS:
        raise DistillError(f"{where}.regressor {regressor!r} is not one of {', '.join(REGRESSORS)}")
    try:
        weight = float(spec.get("weight", 1.0))
    except (TypeError, ValueError):
        raise DistillError(f"{where}.weight must be a number, got {spec.get('weight')!r}") from None
    if weight < 0:
        raise DistillError(f"{where}.weight must be >= 0, got {weight}")
    return FeatureTerm(kind, spec["student"], spec["teacher"], weight, projection, regressor)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Distiller:
    """Loss function and trainer callback for teacher -> student distillation.

    As ``loss_fn(logits, x, y)`` it runs the frozen teacher on ``x`` (no grad,
    inside the caller's autocast), then adds ``kd`` (or plain CE when ``kd`` is
    None) and ``weight * term`` for every feature term. As a callback it hands
    its adapters' parameters (hint regressors, projections) to the optimizer and
    removes its hooks at the end of the fit.

    The adapters live in ``self.adapters``, never in the student: the student's
    module tree and ``state_dict`` keys are unchanged. Everything is validated on
    one dry forward pass of ``example_input`` here, before any training step.
    ``student`` and ``teacher`` are moved to ``device`` (default: the student's).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        kd: Mapping[str, Any] | None = DEFAULT_KD,
        features: Iterable[Mapping[str, Any]] = (),
        example_input: Tensor,
        device: torch.device | str | None = None,
    ) -> None:
        if student is teacher:
            raise DistillError("teacher and student are the same model; load a separate teacher")
        self.student = student
        self.teacher = teacher
        self.kd = parse_kd(kd)
        self.terms = [parse_feature_term(f, i) for i, f in enumerate(features)]
        if self.kd is None and not self.terms:
            raise DistillError(
                "distillation with kd: null and no feature terms would ignore the teacher; "
                "set kd (e.g. {T: 2, w_kd: 0.25, w_ce: 0.75}) or add features"
            )
        names = [t.name for t in self.terms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DistillError(f"feature terms repeat {dupes}; list each student/teacher pair once")

        self.device = torch.device(device) if device is not None else _device_of(student)
        student.to(self.device)
        teacher.to(self.device)
        teacher.eval()
        teacher.requires_grad_(False)

        self._closed = False
        self._s_taps = FeatureTaps(student, [t.student for t in self.terms], "student")
        try:
            self._t_taps = FeatureTaps(teacher, [t.teacher for t in self.terms], "teacher")
        except BaseException:
            self._s_taps.close()
            raise
        try:
            self.adapters = nn.ModuleList(self._size_adapters(example_input))
        except BaseException:
            self.close()
            raise

    # -- set-up -------------------------------------------------------------

    def _size_adapters(self, example_input: Tensor) -> list[FeatureAdapter]:
        # Two samples are enough for shapes; eval mode keeps BatchNorm statistics untouched.
        x = example_input[:2].to(self.device)
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                s_logits = self.student(x)
                t_logits = self.teacher(x)
                self._check_logits(s_logits, t_logits)
                adapters = [self._adapter_for(term) for term in self.terms]
                for term, adapter in zip(self.terms, adapters, strict=True):
                    self._term_value(term, adapter)  # fails here, not at step 1
        finally:
            self.student.train(was_training)
            self._s_taps.reset()
            self._t_taps.reset()
        return adapters

    @staticmethod
    def _check_logits(s_logits: object, t_logits: object) -> None:
        for who, out in (("student", s_logits), ("teacher", t_logits)):
            if not isinstance(out, Tensor) or out.dim() != 2:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise DistillError(
                    f"{who} forward() must return (N, num_classes) logits, got {got}"
                )
        if s_logits.shape[-1] != t_logits.shape[-1]:
            raise DistillError(
                f"teacher predicts {t_logits.shape[-1]} classes but student predicts "
                f"{s_logits.shape[-1]}; build the student with num_classes={t_logits.shape[-1]} "
                "or use a teacher trained on the same dataset"
            )

    def _adapter_for(self, term: FeatureTerm) -> FeatureAdapter:
        for taps, tap in ((self._s_taps, term.student), (self._t_taps, term.teacher)):
            if taps.calls[tap] != 1:
                raise DistillError(
                    f"{taps.label} module {tap!r} runs {taps.calls[tap]} times per forward pass; "
                    "tap a module that runs exactly once (e.g. the block that contains it)"
                )
        s_shape = tuple(self._s_taps[term.student].shape)
        t_shape = tuple(self._t_taps[term.teacher].shape)
        if term.type == "cosine":
            adapter = build_cosine_adapter(
                term.student, s_shape, term.teacher, t_shape, term.projection
            )
        else:
            adapter = build_hint_adapter(
                term.student, s_shape, term.teacher, t_shape, term.regressor
            )
        return adapter.to(self.device)

    def _term_value(self, term: FeatureTerm, adapter: FeatureAdapter) -> Tensor:
        s, t = adapter(self._s_taps[term.student], self._t_taps[term.teacher])
        return cosine_loss(s, t) if term.type == "cosine" else hint_loss(s, t)

    # -- loss_fn --------------------------------------------------------------

    def __call__(self, logits: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Total loss for one step; call right after ``logits = student(x)``."""
        if self._closed:
            raise DistillError("this Distiller is closed; build a new one for another fit")
        try:
            with torch.no_grad():
                t_logits = self.teacher(x)
            if self.kd is not None:
                loss, parts = kd_loss_terms(logits, t_logits, y, **self.kd)
            else:
                loss = ce_loss(logits, y)
                parts = {"ce": loss.detach()}
            for term, adapter in zip(self.terms, self.adapters, strict=True):
                value = self._term_value(term, adapter)
                loss = loss + term.weight * value
                parts[term.name] = value.detach()
            parts["loss"] = loss.detach()
        finally:
            # Drop our references to this step's activations.
            self._s_taps.reset()
            self._t_taps.reset()
        # One device sync for all terms rather than one per term.
        values = torch.stack([v.float() for v in parts.values()]).tolist()
        return loss, dict(zip(parts, values, strict=True))

    # -- callback -------------------------------------------------------------

    def on_fit_start(self, trainer: Any) -> None:
        model = getattr(trainer, "model", None)
        # trainer.model may wrap the student (torch.compile, DataParallel): look inside.
        if isinstance(model, nn.Module) and not any(m is self.student for m in model.modules()):
            raise DistillError(
                "the trainer's model is not the student this Distiller was built for; "
                "pass the same student module to both"
            )
        device = getattr(trainer, "device", None)
        if device is not None and torch.device(device) != self.device:
            self.device = torch.device(device)
            self.teacher.to(self.device)
            self.adapters.to(self.device)
        self.teacher.eval()

    def parameters(self) -> list[nn.Parameter]:
        """Trainable adapter parameters (regressors, projections) for the optimizer."""
        return list(self.adapters.parameters())

    def after_backward(self, trainer: Any) -> None:
        """Average adapter gradients over DDP ranks (DDP only syncs the student's own)."""
        if not self.terms or not dist.is_available() or not dist.is_initialized():
            return
        world = dist.get_world_size()
        if world == 1:
            return
        for p in self.adapters.parameters():
            if p.grad is None:  # every rank must join each all_reduce
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)

    def on_fit_end(self, trainer: Any) -> None:
        self.close()

    def state_dict(self) -> dict[str, Tensor]:
        """The adapters' weights (not the student's), for resuming a distillation."""
        return self.adapters.state_dict()

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore adapter weights saved by ``state_dict`` from an identical set-up."""
        try:
            self.adapters.load_state_dict(state)
        except RuntimeError as e:
            raise DistillError(
                f"saved distillation adapters do not match these feature terms ({e}); "
                "resume with the same teacher, student and features"
            ) from None

    # -- misc -----------------------------------------------------------------

    def describe(self) -> list[str]:
        """One human-readable line per loss part, for the run log."""
        lines = []
        if self.kd is None:
            lines.append("ce: cross-entropy on labels (no kd)")
        else:
            k = self.kd
            lines.append(f"kd: T={k['T']:g} w_kd={k['w_kd']:g} w_ce={k['w_ce']:g}")
        for term, adapter in zip(self.terms, self.adapters, strict=True):
            lines.append(f"{term.name} (weight {term.weight:g}): {adapter.description}")
        return lines

    def close(self) -> None:
        """Remove every hook from student and teacher; safe to call more than once."""
        self._closed = True
        self._s_taps.close()
        if hasattr(self, "_t_taps"):
            self._t_taps.close()

    def __enter__(self) -> Distiller:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
