"""Knowledge distillation for detectors: Ultralytics' detection loss plus terms that pull a (pruned)
student towards its teacher, computed on the same augmented batch.

The loss of a batch (Ultralytics' units: each term per image, times the batch size):

    w_ce * (box + cls + dfl)  +  w_kd * kd_cls  +  w_box * kd_box  +  sum of feature terms

- `kd_cls`: the class scores. YOLO's classifier is a sigmoid per class, so the teacher's
  temperature-softened probabilities sigmoid(z_t / T) are targets of a binary cross-entropy per
  class (written as the binary KL, which has the same gradient and is 0 when the two agree), times
  T^2. Over **all** anchors: where the teacher sees background is knowledge too (it is what keeps
  a pruned student from firing on clutter), and it is the teacher's dense output that makes
  detection KD work at all. Normalised by the sum over anchors of the teacher's top class score,
  as Ultralytics normalises its class loss by the sum of the target scores.
- `kd_box`: the DFL box distributions (reg_max bins per side): KL(teacher || student) over the
  bins at temperature T, times T^2, weighted per anchor by the teacher's top class score. Only
  where the teacher sees an object: a background anchor's box distribution is noise.
- features, on the neck outputs that feed the Detect head (P3-P5, tap `detect`) or any module's
  output: `cwd` (channel-wise distillation: each channel's spatial map a softmax at temperature
  `tau`, KL to the teacher's, times tau^2, averaged over channels: the variant made for dense
  prediction), `cosine` (1 - cosine similarity of the channel vectors at each position) or `hint`
  (MSE). A student tap narrower than the teacher's (a pruned neck) goes through a 1x1 adapter;
  adapters train with the student (their own optimizer parameter group), are saved in the
  resume state and never in the model.

The teacher runs in eval mode under `torch.no_grad()` with its Conv+BatchNorm pairs folded (the
same outputs, fewer kernels); the trainer's autocast covers it as it covers the student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import DistillError

# defaults where a detect preset's kd leaves a weight unset (the classifier's KDTerm defaults weigh
# cross-entropy against soft labels; the detection loss is not split that way)
DETECT_KD = {"T": 2.0, "w_kd": 1.0, "w_box": 1.0, "w_ce": 1.0}
CWD_TAU = 1.0
DETECT_TAP = "detect"  # the Detect head's inputs, one feature map per level


def kd_settings(kd: Any) -> dict[str, float]:
    """T, w_kd, w_box, w_ce of a preset's `kd` (None: the defaults), unset keys from DETECT_KD."""
    if kd is None:
        return dict(DETECT_KD)
    given = kd.model_dump(exclude_unset=True) if hasattr(kd, "model_dump") else dict(kd)
    return {k: float(given[k]) if given.get(k) is not None else v for k, v in DETECT_KD.items()}


def head_outputs(preds: Any) -> dict[str, Any]:
    """The raw head dict (boxes, scores, feats) of a training- or eval-mode forward."""
    if isinstance(preds, tuple | list) and len(preds) == 2 and isinstance(preds[1], dict):
        preds = preds[1]
    if not isinstance(preds, dict):
        raise DistillError(f"the detection head returned {type(preds).__name__}, not its raw outputs")
    return preds.get("one2many", preds)


def class_kd(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """Binary KL of sigmoid(student / T) to sigmoid(teacher / T), (B, nc, A) logits; see module docstring."""
    s, t = student.float() / T, teacher.float() / T
    p = torch.sigmoid(t)
    # p log p/q + (1-p) log (1-p)/(1-q), with log q = logsigmoid(s), log(1-q) = logsigmoid(-s)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    norm = torch.sigmoid(teacher.float()).amax(1).sum().clamp(min=1.0)
    return kl.sum() / norm * T * T


def box_kd(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, reg_max: int, T: float) -> torch.Tensor:
    """KL over the DFL bins, (B, 4 * reg_max, A) logits, weighted by `weight` (B, A)."""
    b, _, a = student.shape
    s = student.float().view(b, 4, reg_max, a)
    t = teacher.float().view(b, 4, reg_max, a)
    log_q = F.log_softmax(s / T, dim=2)
    p = F.softmax(t / T, dim=2)
    kl = (p * (torch.log(p.clamp(min=1e-12)) - log_q)).sum(2).sum(1)  # (B, A): the four sides
    return (kl * weight).sum() / weight.sum().clamp(min=1.0) * T * T


def cwd(student: torch.Tensor, teacher: torch.Tensor, tau: float = CWD_TAU) -> torch.Tensor:
    """Channel-wise distillation: per-channel spatial softmax, KL(teacher || student), mean over channels."""
    b, c, h, w = teacher.shape
    log_q = F.log_softmax(student.float().reshape(b * c, h * w) / tau, dim=1)
    p = F.softmax(teacher.float().reshape(b * c, h * w) / tau, dim=1)
    return (p * (torch.log(p.clamp(min=1e-12)) - log_q)).sum(1).mean() * tau * tau


def cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=1)).mean()


def hint(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student.float(), teacher.float())


FEATURE_LOSSES = {"cwd": cwd, "cosine": cosine, "hint": hint}


@dataclass
class FeatureTap:
    """One feature term: the maps it compares (one per Detect level for `detect`) and its adapters."""

    kind: str
    student: str
    teacher: str
    weight: float
    adapters: nn.ModuleList


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with each Ultralytics Conv's BatchNorm folded into its convolution."""
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if hasattr(m, "bn") and isinstance(getattr(m, "conv", None), nn.Conv2d) and hasattr(m, "forward_fuse"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
    return model


class Taps:
    """Forward hooks keeping the outputs of named modules of one model."""

    def __init__(self, model: nn.Module, names: list[str], role: str):
        modules = dict(model.named_modules())
        self.out: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            if name == DETECT_TAP:
                continue
            if name not in modules:
                top = [n for n in modules if n.count(".") == 1 and n.startswith("model.")]
                raise DistillError(f"feature tap {name!r} is not a module of the {role}; available: {DETECT_TAP} "
                                   f"(the Detect head's inputs P3-P5) or a module path such as "
                                   f"{', '.join(top[:3])} ... {top[-1] if top else ''}")
            self.handles.append(modules[name].register_forward_hook(self._keep(name)))

    def _keep(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.out[name] = output

        return hook

    def maps(self, name: str, head: dict[str, Any]) -> list[torch.Tensor]:
        if name == DETECT_TAP:
            return list(head["feats"])
        out = self.out[name]
        return list(out) if isinstance(out, list | tuple) else [out]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class DetectDistiller:
    """The criterion a KD stage's student trains with (see module docstring); `attach` puts it in
    place of the student's own criterion, which it keeps and calls for the detection loss."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *, kd: Any, features: list[Any],
                 device: torch.device, imgsz: int) -> None:
        self.settings = kd_settings(kd)
        self.teacher = fold_batchnorm(teacher).to(device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.reg_max = int(student.model[-1].reg_max)
        self.student_names = [f.student for f in features]
        self.student_taps = Taps(student, self.student_names, "student")  # on the probe; attach moves them
        self.teacher_taps = Taps(self.teacher, [f.teacher for f in features], "teacher")
        self.features = [FeatureTap(f.type, f.student, f.teacher, float(f.weight), nn.ModuleList()) for f in features]
        self.adapters = nn.ModuleList([t.adapters for t in self.features])
        if self.features:
            self._build_adapters(student, imgsz, device)
        self.student_taps.remove()
        self.base: Any = None

    def _build_adapters(self, student: nn.Module, imgsz: int, device: torch.device) -> None:
        """1x1 convolutions from each student map's channels to the teacher's (identity when equal)."""
        x = torch.zeros(2, 3, imgsz, imgsz, device=device)
        was = student.training
        student.eval()
        with torch.no_grad():
            s_head = head_outputs(student.to(device)(x))
            t_head = head_outputs(self.teacher(x))
        student.train(was)
        for tap in self.features:
            if tap.kind not in FEATURE_LOSSES:
                raise DistillError(f"feature term {tap.kind!r}: a detection model takes {', '.join(FEATURE_LOSSES)}")
            s_maps, t_maps = self.student_taps.maps(tap.student, s_head), self.teacher_taps.maps(tap.teacher, t_head)
            if len(s_maps) != len(t_maps):
                raise DistillError(f"feature taps {tap.student} / {tap.teacher}: {len(s_maps)} student maps, "
                                   f"{len(t_maps)} teacher maps")
            for s, t in zip(s_maps, t_maps, strict=True):
                if s.dim() != 4 or s.shape[2:] != t.shape[2:]:
                    raise DistillError(f"feature taps {tap.student} / {tap.teacher}: maps of shape {tuple(s.shape[1:])} "
                                       f"and {tuple(t.shape[1:])} (they must be feature maps of the same size)")
                if s.shape[1] == t.shape[1] and tap.kind != "hint":
                    tap.adapters.append(nn.Identity())
                else:  # hint always regresses, as for classifiers
                    tap.adapters.append(nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False).to(device))
        self.student_taps.out.clear()
        self.teacher_taps.out.clear()

    def describe(self) -> list[str]:
        st = self.settings
        lines = [f"distillation: detection loss x {st['w_ce']:g} + class-score KD x {st['w_kd']:g} (all anchors) "
                 f"+ DFL box KD x {st['w_box']:g} (weighted by the teacher's confidence), T={st['T']:g}"]
        for tap in self.features:
            n = sum(1 for a in tap.adapters if isinstance(a, nn.Conv2d))
            lines.append(f"feature {tap.kind} {tap.student} -> {tap.teacher} x {tap.weight:g} "
                         f"({len(tap.adapters)} map(s), {n} through a 1x1 adapter)")
        return lines

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.adapters.parameters() if p.requires_grad]

    def attach(self, model: nn.Module) -> None:
        """Become `model`'s criterion (the model the trainer trains, not the probe given at creation)."""
        self.base = model.init_criterion()
        self.student_taps = Taps(model, self.student_names, "student")
        model.criterion = self

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": {k: v.detach().cpu() for k, v in self.adapters.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters.load_state_dict(state["adapters"])

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, items = self.base(preds, batch)
        st = self.settings
        student = head_outputs(preds)
        img = batch["img"]
        with torch.no_grad():
            teacher = head_outputs(self.teacher(img))
        T = st["T"]
        kd = st["w_kd"] * class_kd(student["scores"], teacher["scores"], T)
        if st["w_box"] > 0:
            confidence = torch.sigmoid(teacher["scores"].float()).amax(1)
            kd = kd + st["w_box"] * box_kd(student["boxes"], teacher["boxes"], confidence, self.reg_max, T)
        feat = torch.zeros((), device=kd.device)
        for tap in self.features:
            s_maps = self.student_taps.maps(tap.student, student)
            t_maps = self.teacher_taps.maps(tap.teacher, teacher)
            terms = [FEATURE_LOSSES[tap.kind](a(s), t) for a, s, t in zip(tap.adapters, s_maps, t_maps, strict=True)]
            feat = feat + tap.weight * torch.stack(terms).mean()
        bs = img.shape[0]
        total = loss * st["w_ce"]
        total = torch.cat([total.reshape(-1), ((kd + feat) * bs).reshape(1)])
        extra = {"kd_loss": kd.detach()} | ({"feat_loss": feat.detach()} if self.features else {})
        return total, {**items, **extra}
