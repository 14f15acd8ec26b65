"""Channel tracing: one forward pass that records which channels of which layers belong together.

The model runs once on a dummy input under a dispatch mode that sees every aten op. Convs, linear
layers, BatchNorms and network slimming's `channel_selection` are followed as layers (their own
ops are not looked into); every other op moves, couples or freezes channel labels by the rules in
`engine/slim/oprules.py`. The result (`Trace`) says, for each of those layers, which atom each of its
input and output channels is, and which atoms must be cut together or never. It replaces an
index-mapping walk over the autograd graph whose work grew without bound on view/permute heads
and channel shuffles: here the work is one forward pass plus a few array operations per op.

Graph building is bounded: a time budget and a memory budget (`TraceBudget`, defaults from
SLIMLAB_TRACE_SECONDS / SLIMLAB_TRACE_MEMORY_MB) end it with an error naming the op and the layer
it stopped in, and `progress` is called as layers finish.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from engine.errors import PruneError, SlimlabError
from engine.slim.atoms import OUTPUT, STRUCTURE, Atoms, Lab, along, const, reroot
from engine.slim.gamma import BN_TENSORS, is_batch_norm
from engine.slim.oprules import Rules, op_name, op_outputs

Progress = Callable[[int, int, str], None]

_CONV_FORWARDS = {c.forward for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)}
_BN_FORWARDS = {nn.modules.batchnorm._BatchNorm.forward, nn.SyncBatchNorm.forward}
_BN_BUFFERS = {"running_mean", "running_var", "num_batches_tracked"}


def resolve_input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The (C, H, W) shape used for tracing: given, else the model's `input_size`."""
    shape = input_shape if input_shape is not None else getattr(model, "input_size", None)
    if shape is None:
        raise PruneError(
            f"{type(model).__name__} has no `input_size` attribute, so its input shape is unknown: "
            "give it, e.g. --input-size 3x32x32 (or input_shape=(3, 32, 32) from Python)"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s <= 0 for s in shape):
        raise PruneError(f"input_shape {shape} is not a valid (C, H, W) shape")
    return shape


def size_multiple(model: nn.Module, input_shape: Sequence[int]) -> int | None:
    """The model's `size_multiple` m, if it declares one that `input_shape` (C, H, W) honours.

    A model declaring `size_multiple = m` takes any input whose height and width are multiples of
    m, and every tensor in it scales in proportion (fully convolutional, strides dividing m: a YOLO
    detector with m its largest stride). Its channels couple the same way at every such size, so
    they are traced at a small one, and FLOPs at any size follow from counts at small ones
    (engine/measure.py `scaled_flop_counts`).
    """
    m = getattr(model, "size_multiple", None)
    if not isinstance(m, int) or isinstance(m, bool) or m < 1 or len(input_shape) != 3:
        return None
    return m if input_shape[1] % m == 0 and input_shape[2] % m == 0 else None


def trace_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape channels are traced at: (C, 2m, 2m) for a model with a `size_multiple` m (every
    feature map at least 2 x 2), else `input_shape`."""
    shape = tuple(int(s) for s in input_shape)
    m = size_multiple(model, shape)
    return (shape[0], 2 * m, 2 * m) if m else shape


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Eval mode (so tracing never moves BatchNorm running stats) and the model's inference settings.

    `inference_settings` ({submodule name: {attribute: value}}, plain data) is what a model declares
    to return at inference only what it deploys: an Ultralytics detection head returns its raw
    training outputs (the neck features among them) beside the detections in eval mode, unless its
    `export` is set, and an output pins every channel it carries. All restored after.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    restore: list[tuple[nn.Module, str, bool, Any]] = []
    try:
        for name, attrs in (getattr(model, "inference_settings", None) or {}).items():
            module = model.get_submodule(name)
            for attr, value in attrs.items():
                restore.append((module, attr, attr in vars(module), getattr(module, attr, None)))
                setattr(module, attr, value)
        yield
    finally:
        for module, attr, own, value in reversed(restore):
            if own:
                setattr(module, attr, value)
            else:
                delattr(module, attr)
        for m, training in modes.items():
            m.training = training


@dataclass
class TraceBudget:
    """Limits on building the channel graph: seconds, and growth of the process's memory in MB."""

    seconds: float = 300.0
    memory_mb: float = 4096.0

    @classmethod
    def from_env(cls) -> TraceBudget:
        b = cls()
        for attr, var in (("seconds", "SLIMLAB_TRACE_SECONDS"), ("memory_mb", "SLIMLAB_TRACE_MEMORY_MB")):
            raw = os.environ.get(var)
            if raw:
                try:
                    setattr(b, attr, float(raw))
                except ValueError:
                    raise PruneError(f"{var}={raw!r} is not a number") from None
        return b

    @property
    def max_elements(self) -> int:
        return int(self.memory_mb * 2**20 / 8 / 4)  # int64 labels, a few copies alive at once


def layer_kind(module: object) -> str:
    """'conv', 'linear', 'bn', 'select' (network slimming's channel_selection) or 'other'."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if is_batch_norm(module):
        return "bn"
    if _is_channel_selection(module):
        return "select"
    return "other"


def _is_channel_selection(module: object) -> bool:
    if not isinstance(module, nn.Module):
        return False
    named = type(module).__name__.lower().replace("_", "")
    params = dict(module.named_parameters(recurse=False))
    return named == "channelselection" and set(params) == {"indexes"} and params["indexes"].dim() == 1


def followed_kind(module: nn.Module) -> str | None:
    """The kind of a layer the tracer follows as a whole, or None to trace into its ops.

    Only layers whose forward and tensors are the standard ones: a subclass with its own forward
    or extra parameters is traced op by op, so nothing it does is missed. There, a convolution,
    matrix product or batch norm op computing with the layer's own weight is still that layer
    (`ChannelTracer.conv_op`, `linear_op`, `bn_op`).
    """
    kind = layer_kind(module)
    params = {n for n, _ in module.named_parameters(recurse=False)}
    buffers = {n for n, _ in module.named_buffers(recurse=False)}
    forward = type(module).forward
    if kind == "conv" and forward in _CONV_FORWARDS and params <= {"weight", "bias"} and not buffers:
        return kind
    if kind == "linear" and forward is nn.Linear.forward and params <= {"weight", "bias"} and not buffers:
        return kind
    if kind == "bn" and forward in _BN_FORWARDS and params <= {"weight", "bias"} and buffers <= _BN_BUFFERS:
        return kind
    if kind == "select" and not buffers:
        return kind
    return None


@dataclass
class Layer:
    """A followed layer: the atom of each output channel and of each input channel."""

    name: str
    module: nn.Module
    kind: str
    order: int
    out: np.ndarray | None = None  # conv/linear outputs; BN and channel_selection channels
    inp: np.ndarray | None = None  # conv/linear inputs


@dataclass
class ParamUse:
    """A parameter or buffer used by ops outside a followed layer: one atom per element."""

    name: str
    tensor: torch.Tensor
    atoms: np.ndarray
    order: int


@dataclass
class Sized:
    """A channel count a module keeps in a plain attribute and slices or splits its input by (DPN's
    `num_1x1_c`, a mixed-kernel conv's `splits`): after a cut it is the kept count of each part.

    `parts` are the atoms of the channels each count covers: for an int, the channels before the
    slice position; for a list, each part of the split.
    """

    module: str
    attr: str
    parts: list[np.ndarray]
    as_list: bool


@dataclass
class Trace:
    """What one traced forward pass found (see module docstring)."""

    model_name: str
    input_shape: tuple[int, ...]
    atoms: Atoms
    layers: dict[str, Layer]
    params: dict[str, ParamUse]
    opaque: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    memory_mb: float = 0.0
    flops: int = 0  # one forward at batch 1, by torch.utils.flop_counter's formulas
    flops_of: dict[str, int] = field(default_factory=dict)  # per module name, itself and below
    sized: list[Sized] = field(default_factory=list)
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (what, atoms): each keeps a channel
    layout: tuple | None = field(default=None, repr=False)  # engine/slim/groups.py's, once worked out


class ChannelTracer(TorchDispatchMode):
    """The dispatch mode and module hooks that build a `Trace` (see module docstring)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here is compiled; letting torch wrap __torch_dispatch__ for Dynamo would import
        # torch._dynamo on the first op, several seconds before any tracing starts.
        return False

    def __init__(self, model: nn.Module, budget: TraceBudget, progress: Progress | None) -> None:
        super().__init__()
        self.model = model
        self.budget = budget
        self.progress = progress
        self.atoms = Atoms()
        self.rules = Rules(self)
        self.labels: dict[int, tuple[weakref.ref, Lab]] = {}
        self.names = {m: n for n, m in model.named_modules()}
        self.owners: dict[int, tuple[str, str, nn.Module]] = {}  # a module's own tensor: (module, attribute)
        for n, m in model.named_modules():
            for attr, t in (*m._parameters.items(), *m._buffers.items()):
                if t is not None:
                    self.owners.setdefault(id(t), (n, attr, m))
        self.weight_views: dict[int, tuple[weakref.ref, str, nn.Module]] = {}  # a Linear's transposed weight
        self.sized: dict[tuple[str, str], list[Sized]] = {}
        self.parts: list[tuple[str, np.ndarray]] = []
        self.tensors: dict[int, tuple[str, torch.Tensor]] = {}
        for n, p in model.named_parameters():
            self.tensors.setdefault(id(p), (n, p))
        for n, b in model.named_buffers():
            self.tensors.setdefault(id(b), (n, b))
        self.layers: dict[str, Layer] = {}
        self.params: dict[str, ParamUse] = {}
        self.opaque_ops: Counter[str] = Counter()
        self.stack: list[tuple[str, str]] = []  # (name, class) of the modules being run
        self.running: list[nn.Module] = []  # the same modules
        self.kinds: list[str | None] = []
        self.inside = 0
        self.busy = False
        self.ops = 0
        self.current_op = "the forward pass"
        self.modules_done = 0
        self.modules_total = max(1, sum(1 for _ in model.modules()))
        self.t0 = time.monotonic()
        self.last_report = self.t0
        self.rss0 = _rss_mb()
        self.peak_mb = 0.0
        self.sliced: dict[Any, tuple[weakref.ref, Lab, int, list]] = {}  # channel slices, decided at the end
        self.settled: list[Sized] = []
        self.flops = 0
        self.flops_of: Counter[str] = Counter()

    # ------------------------------------------------------------------ labels

    def get(self, t: torch.Tensor) -> Lab:
        entry = self.labels.get(id(t))
        if entry is not None and entry[0]() is t:
            lab = entry[1]
            if lab.shape == tuple(t.shape):
                return lab
            return self._unknown(t, "its shape changed in place")
        named = self.tensors.get(id(t))
        if named is not None and named[1] is t:
            return self._param(named[0], t)
        return const(tuple(t.shape))

    def _unknown(self, t: torch.Tensor, why: str) -> Lab:
        from engine.slim.atoms import single

        lab = single(self.frozen_atom(why), tuple(t.shape))
        self.set(t, lab)
        return lab

    def _param(self, name: str, t: torch.Tensor) -> Lab:
        self.check_elements(t.numel(), f"parameter {name}")
        ids = self.atoms.new(t.numel()).reshape(tuple(t.shape))
        self.params[name] = ParamUse(name, t, ids, len(self.params) + len(self.layers))
        lab = Lab(torch.from_numpy(ids.copy()), tuple(t.shape))
        self.set(t, lab)
        return lab

    def set(self, t: torch.Tensor, lab: Lab) -> None:
        key = id(t)

        def drop(ref: weakref.ref, key: int = key) -> None:
            entry = self.labels.get(key)
            if entry is not None and entry[0] is ref:
                del self.labels[key]

        try:
            ref = weakref.ref(t, drop)
        except TypeError:
            return
        self.labels[key] = (ref, lab)

    def rooted(self, t: torch.Tensor) -> Lab:
        return reroot(self.get(t), self.atoms)

    def reroot(self, lab: Lab) -> Lab:
        return reroot(lab, self.atoms)

    def where(self) -> str:
        for name, cls in reversed(self.stack):
            if name:
                return f"`{name}` ({cls})"
        return type(self.model).__name__

    def freeze(self, lab: Lab, reason: str, priority: int = STRUCTURE) -> None:
        self.atoms.freeze(lab.atoms(), f"{reason}, in {self.where()}", priority)

    def freeze_ids(self, ids: Any, reason: str) -> None:
        self.atoms.freeze(np.asarray(ids), f"{reason}, in {self.where()}")

    def frozen_atom(self, reason: str) -> int:
        atom = self.atoms.new(1)
        self.atoms.freeze(atom, f"{reason}, in {self.where()}")
        return int(atom[0])

    def note_slice(self, src: torch.Tensor, lab: Lab, d: int, start: int, end: int, step: int, one: bool) -> None:
        """Remember a slice along channels; all slices of a tensor are decided together (Rules.slices),
        with the module that sliced (its count attributes may be the bounds)."""
        where = f"x[{start}:{end}{'' if step == 1 else f':{step}'}] on dimension {d}, in {self.where()}"
        key = (id(src), d)
        entry = self.sliced.get(key)
        if entry is None or entry[0]() is not src:
            if entry is not None:  # the id was reused by a new tensor: keep the old record
                self.sliced[(key, len(self.sliced))] = entry
            entry = self.sliced[key] = (weakref.ref(src), lab, d, [])
        entry[3].append((start, end, step, one, where, self.stack[-1][0] if self.stack else ""))

    def count_opaque(self, name: str) -> None:
        self.opaque_ops[f"{name} in {self.where()}"] += 1

    # ------------------------------------------------------------------ budget and progress

    def check_elements(self, n: int, what: str) -> None:
        if n > self.budget.max_elements:
            raise PruneError(
                f"building the channel graph of {type(self.model).__name__} stopped at {what} in {self.where()}: "
                f"following its channels needs {n:,} labels, over the memory budget of {self.budget.memory_mb:.0f} MB "
                "(SLIMLAB_TRACE_MEMORY_MB). Trace at a smaller --input-size, or report this layer pattern"
            )

    def check_budget(self) -> None:
        now = time.monotonic()
        if now - self.t0 > self.budget.seconds:
            raise PruneError(
                f"building the channel graph of {type(self.model).__name__} took more than "
                f"{self.budget.seconds:.0f} s (SLIMLAB_TRACE_SECONDS); it stopped at {self.current_op} in "
                f"{self.where()}. Trace at a smaller --input-size, or report this layer pattern"
            )
        if self.ops % 64 == 0:
            grown = _rss_mb() - self.rss0
            self.peak_mb = max(self.peak_mb, grown)
            if grown > self.budget.memory_mb:
                raise PruneError(
                    f"building the channel graph of {type(self.model).__name__} used more than "
                    f"{self.budget.memory_mb:.0f} MB (SLIMLAB_TRACE_MEMORY_MB); it stopped at {self.current_op} in "
                    f"{self.where()}. Trace at a smaller --input-size, or report this layer pattern"
                )
        if self.progress is not None and now - self.last_report > 0.25:
            self.last_report = now
            self.progress(min(self.modules_done, self.modules_total), self.modules_total, self.where())

    # ------------------------------------------------------------------ ops

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.busy:
            return out
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:  # what FlopCounterMode counts, without running the model again
            n = int(formula(*args, **kwargs, out_val=out))
            self.flops += n
            for name in {name for name, _ in self.stack if name}:
                self.flops_of[name] += n
        if self.inside:
            return out
        self.ops += 1
        self.current_op = f"aten.{op_name(func)}"
        self.check_budget()
        self.busy = True
        try:
            self.rules.apply(func, args, kwargs, out)
        except SlimlabError:
            raise
        except Exception as exc:  # a rule that cannot follow this call: freeze what it touches
            self.rules.opaque(op_name(func), args, kwargs, op_outputs(out),
                              why=f"{op_name(func)} was called in a way slimlab cannot follow ({type(exc).__name__})")
        finally:
            self.busy = False
        return out

    # ------------------------------------------------------------------ layers

    def pre_hook(self, module: nn.Module, args: Any) -> None:
        name = self.names.get(module)
        self.stack.append((name or "", type(module).__name__))
        self.running.append(module)
        kind = followed_kind(module) if name is not None and not self.inside else None
        self.kinds.append(kind)
        if kind:
            self.inside += 1

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        kind = self.kinds.pop() if self.kinds else None
        if kind:
            self.inside -= 1
            self.busy = True
            try:
                self.follow(kind, self.stack[-1][0], module, args, output)
            except SlimlabError:
                raise
            except Exception as exc:
                x = args[0] if args and isinstance(args[0], torch.Tensor) else None
                why = f"{self.stack[-1][0]} was called in a way slimlab cannot follow ({type(exc).__name__}: {exc})"
                if x is not None:
                    self.freeze(self.get(x), why)
                for o in op_outputs(output):
                    self._unknown(o, why)
            finally:
                self.busy = False
        if self.stack:
            self.stack.pop()
            self.running.pop()
        self.modules_done += 1

    def layer(self, name: str, module: nn.Module, kind: str) -> Layer:
        layer = self.layers.get(name)
        if layer is None:
            layer = self.layers[name] = Layer(name, module, kind, len(self.layers) + len(self.params))
        return layer

    def slot(self, layer: Layer, side: str, atoms: np.ndarray) -> None:
        """Record the atoms a layer's channels hold; a layer run twice holds both (its weights are shared)."""
        prev = getattr(layer, side)
        if prev is None:
            setattr(layer, side, atoms.copy())
            return
        if prev.shape != atoms.shape:
            self.freeze_ids(np.concatenate([prev, atoms]), f"{layer.name} runs on inputs of different widths")
            return
        both = (prev >= 0) & (atoms >= 0)
        self.atoms.union(prev[both], atoms[both])
        mixed = (prev >= 0) != (atoms >= 0)
        if mixed.any():
            self.freeze_ids(np.concatenate([prev[mixed], atoms[mixed]]),
                            f"{layer.name} runs twice and one run reads fixed channels there")

    def channel_atoms(self, lab: Lab, cdim: int, name: str, conv: bool = False) -> np.ndarray:
        """The atom of each channel along `cdim` (freezing them when they also vary elsewhere)."""
        c = lab.c
        other = [d for d in lab.varying() if d != cdim]
        if other and conv and all(d > cdim for d in other):
            self.freeze(lab, f"conv {name} slides its kernel across them (they lie along its spatial dimensions, "
                             "as in ECA attention), so cutting one changes what its neighbours compute")
        elif other:
            self.freeze(lab, f"{name} reads channels that are spread over other dimensions too")
        for d in reversed(range(c.dim())):
            if d != cdim:
                c = c.narrow(d, 0, 1)
        atoms = c.reshape(-1).numpy().astype(np.int64)
        if atoms.size == 1 and lab.shape[cdim] > 1:
            atoms = np.repeat(atoms, lab.shape[cdim])
        return atoms.copy()

    def follow(self, kind: str, name: str, module: nn.Module, args: Any, output: Any) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
            raise TypeError("expected one tensor in and one out")
        if kind == "conv":
            self.conv_layer(name, module, x, output)
        elif kind == "linear":
            self.linear_layer(name, module, x, output)
        elif kind == "bn":
            self.bn_layer(name, module, x, output)
        else:  # channel_selection: a gather of the channels whose `indexes` entry is non-zero
            lab, shape = self.rooted(x), tuple(output.shape)
            chans = self.channel_atoms(lab, 1, name)
            self.slot(self.layer(name, module, kind), "out", chans)
            picked = torch.nonzero(module.indexes.detach().cpu()).reshape(-1).numpy()
            if output.dim() < 2 or output.shape[1] != picked.size:
                raise ValueError("its output does not have one channel per non-zero index")
            self.set(output, along(chans[picked], 1, shape))

    def conv_layer(self, name: str, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> None:
        cdim = x.dim() - (module.weight.dim() - 2) - 1
        inp = self.channel_atoms(self.rooted(x), cdim, name, conv=True)
        layer = self.layer(name, module, "conv")
        if layer.out is None:
            layer.out = self.atoms.new(module.out_channels)
        self.slot(layer, "inp", inp)
        if module.groups > 1:
            self.conv_groups(layer, module, inp)
        self.set(output, along(layer.out, cdim, tuple(output.shape)))

    def linear_layer(self, name: str, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> None:
        inp = self.channel_atoms(self.rooted(x), x.dim() - 1, name)
        layer = self.layer(name, module, "linear")
        if layer.out is None:
            layer.out = self.atoms.new(module.out_features)
        self.slot(layer, "inp", inp)
        self.set(output, along(layer.out, output.dim() - 1, tuple(output.shape)))

    def bn_layer(self, name: str, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> None:
        lab = self.rooted(x)
        chans = self.channel_atoms(lab, 1 if x.dim() > 1 else 0, name)
        self.slot(self.layer(name, module, "bn"), "out", chans)
        self.set(output, self.reroot(Lab(lab.c, tuple(output.shape))))

    # ------------------------------------------------------------------ layers met as ops

    def owner(self, t: Any, attr: str) -> tuple[str, nn.Module] | None:
        """(name, module) of the module holding `t` as its own `attr`, else None."""
        entry = self.owners.get(id(t)) if isinstance(t, torch.Tensor) else None
        if entry is None or entry[1] != attr or getattr(entry[2], attr, None) is not t:
            return None
        return entry[0], entry[2]

    def runs(self, module: nn.Module) -> bool:
        """Whether `module` is the innermost module running (its own forward makes the current op)."""
        return bool(self.running) and self.running[-1] is module

    def conv_op(self, args: tuple, out: torch.Tensor) -> bool:
        """aten.convolution with a conv layer's own weight, in its own forward (a same-padding conv
        pads, then calls the functional conv): followed as that layer. False when it is not one."""
        hit = self.owner(args[1], "weight")
        if hit is None:
            return False
        name, module = hit
        bias = args[2] if len(args) > 2 else None
        if layer_kind(module) != "conv" or not self.runs(module) or (bias is not None and bias is not module.bias):
            return False
        if len(args) < 9 or bool(args[6]) != bool(module.transposed) or int(args[8]) != module.groups:
            return False
        self.conv_layer(name, module, args[0], out)
        return True

    def weight_view(self, src: torch.Tensor, out: torch.Tensor) -> None:
        """Remember the transpose of a Linear's weight: the functional linear multiplies by it."""
        hit = self.owner(src, "weight")
        if hit is not None and layer_kind(hit[1]) == "linear" and src.dim() == 2:
            self.weight_views = {k: v for k, v in self.weight_views.items() if v[0]() is not None}
            self.weight_views[id(out)] = (weakref.ref(out), *hit)

    def linear_op(self, name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> bool:
        """aten.addmm / mm by a Linear layer's transposed weight, in its own forward: that layer."""
        bias, x, w = (args[0], args[1], args[2]) if name == "addmm" else (None, args[0], args[1])
        entry = self.weight_views.get(id(w)) if isinstance(w, torch.Tensor) else None
        if entry is None or entry[0]() is not w or any(kwargs.get(k, 1) != 1 for k in ("alpha", "beta")):
            return False
        _, lname, module = entry
        if not self.runs(module) or x.dim() != 2 or (bias is not None and bias is not module.bias):
            return False
        self.linear_layer(lname, module, x, out)
        return True

    def bn_op(self, args: tuple, outs: list[torch.Tensor]) -> bool:
        """A batch norm op normalising with one BatchNorm's own tensors (gamma, beta, running
        statistics), wherever it is called from (a BatchNorm subclass applying its activation after
        the functional batch norm): followed as that BatchNorm. False when it is not one."""
        x = args[0]
        tensors = [a for a in args[1:5] if isinstance(a, torch.Tensor)]
        if not tensors or not isinstance(x, torch.Tensor) or x.dim() < 2:
            return False
        entries = [self.owners.get(id(t)) for t in tensors]
        if any(e is None for e in entries):
            return False
        name, _, module = entries[0]
        for (_, attr, m), t in zip(entries, tensors, strict=True):
            if m is not module or attr not in BN_TENSORS or getattr(m, attr) is not t:
                return False
            if t.dim() != 1 or t.numel() != x.shape[1]:
                return False
        if layer_kind(module) != "bn":
            return False
        self.bn_layer(name, module, x, outs[0])
        for o in outs[1:]:
            self.set(o, const(tuple(o.shape)))
        return True

    def frozen_norms(self) -> None:
        """Frozen BatchNorms computing elementwise (x * gamma / sqrt(var + eps) + ...): their four
        tensors each follow the channels one to one, so the module is that BatchNorm layer."""
        for name, module in self.model.named_modules():
            if name in self.layers or layer_kind(module) != "bn":
                continue
            keys = [f"{name}.{a}" if name else a for a in BN_TENSORS if getattr(module, a, None) is not None]
            uses = [self.params.get(k) for k in keys]
            if any(u is None or u.atoms.ndim != 1 for u in uses):
                continue
            roots = [self.atoms.find(u.atoms) for u in uses]
            if any(not np.array_equal(r, roots[0]) for r in roots[1:]) or np.unique(roots[0]).size != roots[0].size:
                continue
            self.layers[name] = Layer(name, module, "bn", min(u.order for u in uses), out=uses[0].atoms.copy())
            for k in keys:
                del self.params[k]

    # ------------------------------------------------------------------ channel counts kept in attributes

    def count_attr(self, value: Any, as_list: bool = False, name: str | None = None) -> tuple[str, list[str]] | None:
        """(module, attributes) of the plain attributes equal to `value` (an int > 1, or a list of
        them) of module `name` (default: the innermost one running), else None: the count a slice or
        split is made by. All of them follow the cut: the code may read either of two that are
        equal (a block's in_channels and out_channels), and one it does not read is left unused."""
        if name is None:
            name = self.stack[-1][0] if self.stack else ""
        if not name:
            return None
        module = self.model.get_submodule(name)
        if as_list:
            want = [int(v) for v in value]
            hits = [a for a, v in vars(module).items() if not a.startswith("_") and isinstance(v, (list, tuple))
                    and len(v) == len(want) and all(type(i) is int for i in v) and list(v) == want]
        else:
            if type(value) is not int or value <= 1:
                return None
            hits = [a for a, v in vars(module).items() if not a.startswith("_") and type(v) is int and v == value]
        return (name, hits) if hits else None

    def note_sized(self, module: str, attrs: list[str], parts: list[np.ndarray], as_list: bool) -> None:
        for attr in attrs:
            self.sized.setdefault((module, attr), []).append(Sized(module, attr, [p.copy() for p in parts], as_list))

    def settle_sized(self) -> list[Sized]:
        """One record per attribute; an attribute whose uses would get different counts is frozen."""
        out = []
        for (module, attr), records in self.sized.items():
            first = [np.sort(self.atoms.find(p)) for p in records[0].parts]
            agree = all(len(r.parts) == len(first) and all(np.array_equal(np.sort(self.atoms.find(p)), f)
                                                          for p, f in zip(r.parts, first, strict=True))
                        for r in records[1:])
            if agree:
                out.append(records[0])
                continue
            for r in records:
                for p in r.parts:
                    self.atoms.freeze(p, f"`{module}` slices or splits them by its `{attr}`, and its uses of it "
                                         "would keep different counts")
        return out

    def conv_groups(self, layer: Layer, module: nn.Module, inp: np.ndarray) -> None:
        """A grouped conv keeps its groups equal: DepGraph's rule, the same positions cut in every group.

        When each group reads one channel (depthwise, with or without a channel multiplier), a
        group goes as a whole: its input channel and its outputs are cut together.
        """
        g = module.groups
        cpg, opg = inp.size // g, layer.out.size // g
        outs = layer.out.reshape(g, opg)
        if cpg == 1:
            fixed = inp < 0
            if fixed.any():
                self.freeze_ids(outs[fixed], f"depthwise conv {layer.name} reads channels that cannot be cut")
            keep = ~fixed
            self.atoms.union(np.repeat(inp[keep], opg), outs[keep].ravel())
            return
        grid = inp.reshape(g, cpg)
        fixed_cols = (grid < 0).any(axis=0)
        if fixed_cols.any():
            self.freeze_ids(grid[:, fixed_cols], f"grouped conv {layer.name} reads channels that cannot be cut")
        for k in range(1, g):
            self.atoms.union(grid[0], grid[k])
            self.atoms.union(outs[0], outs[k])

    # ------------------------------------------------------------------ start and end

    def start(self, x: torch.Tensor) -> None:
        self.busy = True  # the labels' own tensor ops are not the model's
        atoms = self.atoms.new(x.shape[1])
        self.atoms.freeze(atoms, "they are the model's input channels")
        self.set(x, along(atoms, 1, tuple(x.shape)))
        self.busy = False

    def finish(self, out: Any) -> None:
        for _, lab, d, cuts in self.sliced.values():
            self.rules.slices(self.reroot(lab), d, cuts)
        self.frozen_norms()
        self.settled = self.settle_sized()
        for t in flatten_tensors(out):
            self.atoms.freeze(self.rooted(t).atoms(), "they are model outputs", OUTPUT)

    def trace(self, input_shape: tuple[int, ...]) -> Trace:
        return Trace(
            type(self.model).__name__, input_shape, self.atoms, self.layers, self.params,
            dict(self.opaque_ops), time.monotonic() - self.t0, self.peak_mb, self.flops, dict(self.flops_of),
            self.settled, self.parts,
        )


def flatten_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (nested tuples, lists and dicts)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_tensors(v)]
    return []


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil missing or not permitted: only the time and label budgets apply
        return 0.0


_TRACES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Trace]] = weakref.WeakKeyDictionary()


def _signature(model: nn.Module, shape: tuple[int, ...]) -> tuple:
    """What a trace depends on: the input shape, every layer's type and every tensor's shape (and the
    `indexes` of channel_selection layers, which pick channels by value)."""
    layers = tuple((n, type(m)) for n, m in model.named_modules())
    tensors = tuple((n, tuple(t.shape)) for n, t in (*model.named_parameters(), *model.named_buffers()))
    picks = tuple((n, tuple(torch.nonzero(m.indexes.detach()).reshape(-1).tolist()))
                  for n, m in model.named_modules() if _is_channel_selection(m))
    return shape, layers, tensors, picks


def trace_for(model: nn.Module, input_shape: Sequence[int], *, budget: TraceBudget | None = None,
              progress: Progress | None = None) -> Trace:
    """The trace `build_trace` made of this very model, if its structure has not changed since; else a new one."""
    shape = trace_shape(model, input_shape)
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == _signature(model, shape):
        return cached[1]
    return build_trace(model, shape, budget=budget, progress=progress)


def build_trace(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    budget: TraceBudget | None = None,
    progress: Progress | None = None,
) -> Trace:
    """Trace `model` on one dummy input into a `Trace` (remembered for `trace_for`): of `input_shape`
    (C, H, W), or of a smaller size for a model that declares a `size_multiple` (see `trace_shape`)."""
    budget = budget or TraceBudget.from_env()
    shape = trace_shape(model, input_shape)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn(1, *shape, device=device)
    tracer = ChannelTracer(model, budget, progress)
    hooks = [
        nn.modules.module.register_module_forward_pre_hook(tracer.pre_hook),
        nn.modules.module.register_module_forward_hook(tracer.post_hook),
    ]
    try:
        with traceable(model), torch.no_grad(), tracer:
            tracer.start(x)
            out = model(x)
            tracer.busy = True
            tracer.finish(out)
    except SlimlabError:
        raise
    except Exception as exc:  # tracing runs arbitrary user forward code
        raise _forward_error(model, shape, tracer, exc) from exc
    finally:
        for h in hooks:
            h.remove()
    if progress is not None:
        progress(tracer.modules_total, tracer.modules_total, "done")
    trace = tracer.trace(shape)
    _TRACES[model] = (_signature(model, shape), trace)
    return trace


def _forward_error(model: nn.Module, shape: tuple[int, ...], tracer: ChannelTracer, exc: Exception) -> PruneError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = tracer.where()
    sizes = ", ".join(map(str, shape))
    hint = ""
    lowered = text.lower()
    if any(w in lowered for w in ("size", "shape", "dimension", "channels", "expected input", "must match")):
        hint = (" If the model expects another input size, give it: --input-size CxHxW "
                f"(now {'x'.join(map(str, shape))})")
    return PruneError(
        f"running {type(model).__name__} on a dummy input of shape (1, {sizes}) failed in {where}: "
        f"{type(exc).__name__}: {text[:300]}.{hint}"
    )
