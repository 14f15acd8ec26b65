"""How channel labels flow through each aten op seen while tracing.

A rule either follows the channels exactly (elementwise ops couple the channels they combine,
cat concatenates them, views and permutes move them, spatial ops keep them) or, where cutting a
channel would change what the op computes, freezes the channels involved with the reason. Every
op without a rule is opaque: its inputs' channels are frozen and its output is one frozen atom.
That keeps the trace correct for any code, at the price of cutting less.

A pruned model runs the same Python code with fewer channels. Where that code uses channel counts
(a view into groups, a split, a slice), the rules assume what public model code does: a view keeps
every factor but its largest (`view(b, groups, c // groups, h, w)`), an even split or chunk splits
the pruned tensor evenly, a slice or split by a count the module keeps in a plain attribute
(`x[:, :self.num_1x1_c]`, `torch.split(x, self.splits, 1)`) follows that attribute, which the cut
sets to what each part keeps, and any other slice or split is at fixed positions. The prune is then checked
on a dummy batch (engine/slim/verify.py), so a model that computes otherwise is refused, not broken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engine.slim.atoms import NONE, Lab, compact, const, single

POINTWISE_EXTRA = {
    "hardswish", "hardswish_", "_prelu_kernel", "_to_copy", "detach", "alias", "lift_fresh", "lift",
    "contiguous", "positive", "resolve_conj", "resolve_neg", "dropout", "native_dropout",
    "_conj", "type_as", "to", "fill_", "zero_", "bernoulli_",
}
IDENTITY = {"fill_", "zero_", "bernoulli_"}  # in place, values replaced: labels stay
FACTORIES = {
    "zeros", "ones", "full", "empty", "empty_strided", "arange", "linspace", "logspace", "eye",
    "rand", "randn", "randint", "randperm", "scalar_tensor", "tensor", "normal", "bartlett_window",
    "hann_window", "hamming_window", "blackman_window", "kaiser_window", "empty_like", "zeros_like",
    "ones_like", "full_like", "rand_like", "randn_like", "randint_like", "meshgrid",
}
RESHAPES = {"view", "_unsafe_view", "reshape", "_reshape_alias", "view_copy", "_reshape_copy", "flatten", "unflatten"}
PERMUTES = {"permute", "transpose", "t", "movedim", "swapaxes", "swapdims", "numpy_T", "adjoint", "mT", "permute_copy", "transpose_copy", "t_copy"}
SPATIAL_PREFIXES = (
    "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "_adaptive_avg_pool", "upsample_",
    "_upsample", "reflection_pad", "replication_pad", "fractional_max_pool", "lp_pool", "max_unpool",
)
REDUCTIONS = {
    "sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "prod", "var", "std", "var_mean",
    "std_mean", "norm", "linalg_vector_norm", "logsumexp", "any", "all", "count_nonzero", "median",
    "nanmedian", "mode", "nansum", "nanmean", "kthvalue", "topk", "sort", "cumsum", "cumprod", "cummax",
    "cummin", "_softmax", "_log_softmax", "softmax", "log_softmax", "aminmax", "argsort", "logcumsumexp",
}
SHAPE_KEEPING_REDUCTIONS = {"_softmax", "_log_softmax", "softmax", "log_softmax", "cumsum", "cumprod", "cummax", "cummin", "sort", "argsort", "logcumsumexp"}
BATCH_NORMS = {"native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update"}
DATA_MOVES = {"repeat", "flip", "pixel_unshuffle", "tile", "rot90", "unfold", "narrow_copy", "index_select", "gather", "index", "take_along_dim", "roll", "diagonal", "masked_select", "expand_copy"}
SPLITS = {"split", "split_with_sizes", "unbind", "tensor_split", "chunk", "unsafe_split", "unsafe_split_with_sizes", "split_copy", "split_with_sizes_copy", "unbind_copy", "unsafe_chunk"}
SLICES = {"slice", "select", "narrow", "slice_copy", "select_copy"}
CHANNEL_SHUFFLES = {"channel_shuffle", "native_channel_shuffle"}
MAX_PROPORTIONAL_PARTS = 4  # x[:, :c/2], chunk(2), chunk(4): an even split follows the pruned width


def op_name(func: Any) -> str:
    return func._schema.name.split("::")[-1]


def _tensors(args: Sequence[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def op_outputs(out: Any) -> list[torch.Tensor]:
    """The tensors an aten op returned (one, or the tensors of a tuple)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _align(lab: Lab, ndim: int) -> Lab:
    """Leading size-1 dimensions, as broadcasting adds them."""
    extra = ndim - lab.c.dim()
    if extra <= 0:
        return lab
    return Lab(lab.c.reshape((1,) * extra + tuple(lab.c.shape)), (1,) * extra + tuple(lab.shape))


class Rules:
    """Label rules bound to one tracer (its labels, atoms, freeze reasons and current module)."""

    def __init__(self, tracer: Any) -> None:
        self.t = tracer  # engine.slim.trace.ChannelTracer, which applies these rules (not imported: it imports them)

    # ------------------------------------------------------------------ dispatch

    def apply(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        name = op_name(func)
        outs = op_outputs(out)
        if not outs:
            return
        tags = func.tags
        if name in FACTORIES or name.startswith("new_"):
            for o in outs:
                self.t.set(o, const(tuple(o.shape)))
        elif name in IDENTITY:
            return
        elif name in RESHAPES:
            self.reshape(func, args[0], outs[0])
        elif name in PERMUTES:
            lab = self.t.get(args[0])
            self.t.set(outs[0], Lab(func(lab.c, *args[1:], **kwargs).contiguous(), tuple(outs[0].shape)))
            self.t.weight_view(args[0], outs[0])
        elif name == "convolution" and self.t.conv_op(args, outs[0]):
            return
        elif name in ("addmm", "mm") and self.t.linear_op(name, args, kwargs, outs[0]):
            return
        elif name in ("unsqueeze", "unsqueeze_copy"):
            lab = self.t.get(args[0])
            self.t.set(outs[0], Lab(lab.c.unsqueeze(args[1]), tuple(outs[0].shape)))
        elif name in ("squeeze", "squeeze_copy"):
            self.squeeze(args, outs[0])
        elif name in ("expand", "expand_as", "broadcast_to"):
            lab = _align(self.t.get(args[0]), outs[0].dim())
            self.t.set(outs[0], Lab(lab.c, tuple(outs[0].shape)))
        elif name in SLICES:
            self.slice(name, args, outs[0])
        elif name in SPLITS:
            self.split(name, args, outs)
        elif name in ("cat", "concat", "concatenate", "stack"):
            self.cat(name, args, kwargs, outs[0])
        elif name == "constant_pad_nd":
            self.pad(args, outs[0])
        elif name.startswith(SPATIAL_PREFIXES):
            self.spatial(name, args[0], outs)
        elif name in BATCH_NORMS:
            self.batch_norm(name, args, outs)
        elif name in ("native_group_norm", "native_layer_norm"):
            self.norm(name, args, outs)
        elif name in CHANNEL_SHUFFLES:
            self.channel_shuffle(args, outs[0])
        elif name == "pixel_shuffle":
            self.pixel_shuffle(args, outs[0])
        elif name in REDUCTIONS or torch.Tag.reduction in tags:
            self.reduction(name, args, kwargs, outs)
        elif name in DATA_MOVES:
            self.data_move(func, name, args, kwargs, outs[0])
        elif torch.Tag.pointwise in tags or name in POINTWISE_EXTRA or name == "copy_":
            self.elementwise(name, args, kwargs, outs)
        else:
            self.opaque(name, args, kwargs, outs)

    # ------------------------------------------------------------------ opaque

    def opaque(self, name: str, args: tuple, kwargs: dict, outs: list[torch.Tensor], why: str | None = None) -> None:
        """Freeze every channel going in; the output is one frozen atom."""
        reason = why or f"they go through {name}, which slimlab does not follow"
        for a in _tensors(args) + _tensors(list(kwargs.values())):
            self.t.freeze(self.t.get(a), reason)
        atom = self.t.frozen_atom(reason)
        self.t.count_opaque(name)
        for o in outs:
            self.t.set(o, single(atom, tuple(o.shape)))

    # ------------------------------------------------------------------ elementwise

    def elementwise(self, name: str, args: tuple, kwargs: dict, outs: list[torch.Tensor]) -> None:
        inputs = _tensors(args) + _tensors(list(kwargs.values()))
        out_shape = tuple(outs[0].shape)
        nd = len(out_shape)
        if not inputs:
            for o in outs:
                self.t.set(o, const(tuple(o.shape)))
            return
        labs = [_align(self.t.rooted(a), nd) for a in inputs]
        lab = self.combine(labs, out_shape, f"{name}")
        for o in outs:
            if tuple(o.shape) == out_shape:
                self.t.set(o, lab)
            else:
                self.t.set(o, const(tuple(o.shape)))

    def combine(self, labs: list[Lab], out_shape: tuple[int, ...], what: str) -> Lab:
        """Labels of an elementwise combination: channels at the same position are coupled."""
        nd = len(out_shape)
        varying = sorted({d for lab in labs for d in lab.varying()})
        if not varying:
            atoms = [int(lab.c.reshape(-1)[0]) for lab in labs]
            real = [a for a in atoms if a >= 0]
            if len(real) > 1:
                self.t.atoms.union(np.array(real[:1] * (len(real) - 1)), np.array(real[1:]))
            return single(real[0] if real else NONE, out_shape)
        part = [lab for lab in labs if any(lab.shape[d] > 1 for d in varying)]
        csize = [1] * nd
        for d in varying:
            csize[d] = max(lab.c.shape[d] for lab in part)
        grids = [lab.c.expand(csize) for lab in part]
        stacked = torch.stack(grids)
        atoms = stacked.numpy().reshape(len(grids), -1)
        constant = (atoms < 0).any(axis=0) & (atoms >= 0).any(axis=0)
        if constant.any():
            self.t.freeze_ids(atoms[:, constant], f"{what} combines them with a constant tensor, which cannot lose channels")
        for k in range(1, len(grids)):
            self.t.atoms.union(atoms[0], atoms[k])
        merged = stacked.max(0).values
        return compact(torch.from_numpy(self.t.atoms.find(merged.numpy().ravel()).reshape(csize)), out_shape)

    # ------------------------------------------------------------------ views

    def reshape(self, func: Any, src: torch.Tensor, out: torch.Tensor) -> None:
        lab = self.t.rooted(src)
        shape = tuple(out.shape)
        if not lab.varying():
            self.t.set(out, Lab(lab.c.reshape(-1)[:1].reshape((1,) * len(shape)), shape))
            return
        self.t.check_elements(math.prod(shape), "a reshape")
        res = compact(lab.full.reshape(shape), shape)
        self.t.set(out, self.regroup(res))

    def regroup(self, lab: Lab) -> Lab:
        """Channels spread over several dimensions (a view into groups): the largest dimension follows
        the pruned width, so the others are cut at the same position (DepGraph's rule for groups)."""
        vary = lab.varying()
        if len(vary) < 2:
            return lab
        keep = max(vary, key=lambda d: (lab.shape[d], d))
        for d in vary:
            if d != keep:
                first = lab.c.narrow(d, 0, 1).expand(lab.c.shape)
                self.t.atoms.union(lab.c.numpy().ravel(), first.numpy().ravel())
        return self.t.reroot(lab)

    def squeeze(self, args: tuple, out: torch.Tensor) -> None:
        lab = self.t.get(args[0])
        shape = lab.shape
        if len(args) == 1:
            dims = [d for d, s in enumerate(shape) if s == 1]
        else:
            ds = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
            dims = [_dim(d, len(shape)) for d in ds if shape[_dim(d, len(shape))] == 1] if shape else []
        c = lab.c
        for d in sorted(dims, reverse=True):
            c = c.squeeze(d)
        self.t.set(out, Lab(c, tuple(out.shape)))

    # ------------------------------------------------------------------ slices and splits

    def _even(self, lab: Lab, d: int, parts: int, what: str) -> None:
        """An even split along channels: the pruned split is even too, so cut the same position in every part."""
        grid = lab.c.movedim(d, 0)
        size = grid.shape[0] // parts
        grid = grid.reshape(parts, size, *grid.shape[1:]).numpy()
        for k in range(1, parts):
            self.t.atoms.union(grid[0].ravel(), grid[k].ravel())

    def _fixed(self, lab: Lab, d: int, upto: int, what: str, located: bool = False) -> None:
        """Channels before a fixed cut position: cutting any would move the position."""
        if upto <= 0:
            return
        ids = lab.c.narrow(d, 0, min(upto, lab.c.shape[d])).numpy()
        if located:
            self.t.atoms.freeze(ids, what)
        else:
            self.t.freeze_ids(ids, what)

    def slice(self, name: str, args: tuple, out: torch.Tensor) -> None:
        lab = self.t.rooted(args[0])
        nd = len(lab.shape)
        d = _dim(int(args[1]) if len(args) > 1 else 0, nd)
        size = lab.shape[d]
        if name in ("select", "select_copy"):
            i = int(args[2])
            i = i + size if i < 0 else i
            start, end, step = i, i + 1, 1
        elif name == "narrow":
            start = int(args[2])
            start = start + size if start < 0 else start
            end, step = start + int(args[3]), 1
        else:
            start = args[2] if len(args) > 2 and args[2] is not None else 0
            end = args[3] if len(args) > 3 and args[3] is not None else size
            step = int(args[4]) if len(args) > 4 else 1
            start = max(0, min(size, start + size if start < 0 else start))
            end = max(start, min(size, end + size if end < 0 else end))
        if lab.c.shape[d] > 1 and (start, end, step) != (0, size, 1):
            self.t.note_slice(args[0], lab, d, start, end, step, name in ("select", "select_copy"))
        if lab.c.shape[d] > 1:
            c = lab.c.narrow(d, start, max(0, end - start))[(slice(None),) * d + (slice(None, None, step),)]
            if name in ("select", "select_copy"):
                c = c.squeeze(d)
        else:
            c = lab.c.squeeze(d) if name in ("select", "select_copy") else lab.c
        self.t.set(out, Lab(c.contiguous(), tuple(out.shape)))

    def bound_attrs(self, module: str, start: int, end: int, step: int, one: bool, size: int) -> list | None:
        """The count attributes a slice's bounds are, as (module, attribute, position), when every
        bound is 0, the end, or a plain int attribute of the module slicing (DPN's
        `x[:, :self.num_1x1_c]`, `x[:, self.num_1x1_c:]`); None when a bound is a fixed number."""
        if step != 1 or one:
            return None
        found = []
        for i, pos in enumerate((start, end)):
            if pos == 0 or (i == 1 and pos >= size):
                continue
            hit = self.t.count_attr(pos, name=module)
            if hit is None:
                return None
            found.append((*hit, pos))
        return found

    def even_counts(self, lab: Lab, d: int, parts: int, module: str | None = None) -> None:
        """An even split made by a count attribute (`x.split(self.expand_chs // 2, 1)`): an attribute
        equal to the whole width or to one part's becomes the kept count of what it covers."""
        if lab.varying() != [d]:
            return
        row = lab.c.reshape(-1).numpy()
        size = row.size
        for value, atoms in ((size // parts, row[: size // parts]), (size, row)):
            hit = self.t.count_attr(value, name=module)
            if hit is not None:
                self.t.note_sized(*hit, [atoms], False)

    def even_by_count(self, lab: Lab, d: int, sizes: list[int]) -> bool:
        """An even split into many parts whose width or total is a count attribute of the module
        splitting (Res2Net's `torch.split(x, self.width, 1)`): it follows the cut through it."""
        return lab.varying() == [d] and any(self.t.count_attr(v) for v in (sizes[0], sum(sizes)))

    def sized_slice(self, lab: Lab, d: int, start: int, end: int, attrs: list[tuple[str, list[str], int]]) -> None:
        """A slice by count attributes: each attribute becomes the kept count before its position."""
        row = lab.c.reshape(-1).numpy()
        for module, names, pos in attrs:
            self.t.note_sized(module, names, [row[:pos]], False)
        self.t.parts.append((f"`{attrs[0][0]}` x[{start}:{end}]", row[start:end]))

    def slices(self, lab: Lab, d: int, cuts: list[tuple]) -> None:
        """Decide the slices taken of one tensor along its channels, once the whole trace is seen.

        Slices that split it into 2..4 equal parts (`x[:, :c]`, `x[:, c:]` with c = C/2) follow the
        pruned width like a chunk does. A slice whose bounds are count attributes of the module
        slicing (`bound_attrs`) follows them: each part is cut freely and the attribute is set to
        what it keeps (engine/slim/cut.py). Any other slice is at fixed positions, so the channels
        before its end (or before its start, for a slice running to the end) are never cut.
        """
        size = lab.shape[d]
        along_d = lab.varying() == [d]
        spans = sorted({(a, b) for a, b, step, one, _, _ in cuts if step == 1 and not one})
        if len(spans) == len(cuts) and len(spans) >= 2:
            width = spans[0][1] - spans[0][0]
            parts = size // width if width else 0
            if (2 <= parts <= MAX_PROPORTIONAL_PARTS and parts * width == size
                    and spans == [(k * width, (k + 1) * width) for k in range(parts)]):
                self._even(lab, d, parts, "even slices")
                self.even_counts(self.t.reroot(lab), d, parts, cuts[0][5])
                return
        for start, end, step, one, where, module in cuts:
            attrs = self.bound_attrs(module, start, end, step, one, size) if module else None
            if attrs is not None and along_d:
                self.sized_slice(lab, d, start, end, attrs)
                continue
            upto = size if step != 1 else (end if end < size or one else start)
            self._fixed(lab, d, upto, f"sliced at fixed channel positions ({where})", located=True)

    def split(self, name: str, args: tuple, outs: list[torch.Tensor]) -> None:
        lab = self.t.rooted(args[0])
        nd = len(lab.shape)
        if name in ("unbind", "unbind_copy"):
            d = _dim(int(args[1]) if len(args) > 1 else 0, nd)
            sizes = [1] * len(outs)
            squeeze = True
        else:
            d = _dim(int(args[2]) if len(args) > 2 else 0, nd)
            sizes = [o.shape[d] for o in outs]
            squeeze = False
        total = lab.shape[d]
        if lab.c.shape[d] > 1 and len(sizes) > 1:
            what = f"{name} into {tuple(sizes)} along dimension {d}"
            even = len(set(sizes)) == 1 and sizes[0] * len(sizes) == total
            hit = None
            if "with_sizes" in name and lab.varying() == [d]:
                hit = self.t.count_attr(list(args[1]), as_list=True)
            if hit is not None:  # split by a list the module keeps (a mixed-kernel conv's `splits`)
                row = lab.c.reshape(-1).numpy()
                bounds = np.cumsum([0, *sizes])
                parts = [row[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
                self.t.note_sized(*hit, parts, True)
                self.t.parts.extend((f"`{hit[0]}` part {k} of its `{hit[1][0]}` split", p) for k, p in enumerate(parts))
            elif not squeeze and even and (len(sizes) <= MAX_PROPORTIONAL_PARTS or self.even_by_count(lab, d, sizes)):
                self._even(lab, d, len(sizes), what)
                self.even_counts(self.t.reroot(lab), d, len(sizes))
            else:
                self._fixed(lab, d, total, f"split into fixed channel counts ({what})")
        lab = self.t.reroot(lab)
        offset = 0
        for o, s in zip(outs, sizes, strict=False):
            if lab.c.shape[d] > 1:
                c = lab.c.narrow(d, offset, s)
            else:
                c = lab.c
            if squeeze:
                c = c.squeeze(d)
            self.t.set(o, Lab(c.contiguous(), tuple(o.shape)))
            offset += s

    def cat(self, name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        tensors = list(args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        nd = out.dim()
        d = _dim(int(dim), nd)
        if name == "stack":
            labs = [self.t.rooted(t) for t in tensors]
            labs = [Lab(lab.c.unsqueeze(d), lab.shape[:d] + (1,) + lab.shape[d:]) for lab in labs]
        else:
            # torch.cat skips 1-D empty tensors (the legacy "nothing" placeholder)
            tensors = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)]
            labs = [self.t.rooted(t) for t in tensors]
        if not labs:
            self.t.set(out, const(tuple(out.shape)))
            return
        others = sorted({k for lab in labs for k in lab.varying() if k != d})
        if others:  # channels along another dimension line up across the pieces: couple them
            firsts = [Lab(lab.c.narrow(d, 0, 1), lab.shape[:d] + (1,) + lab.shape[d + 1 :]) for lab in labs]
            self.combine(firsts, tuple(out.shape[:d]) + (1,) + tuple(out.shape[d + 1 :]), f"{name} along dimension {d}")
            labs = [self.t.reroot(lab) for lab in labs]
        csize = [max(lab.c.shape[k] for lab in labs) if k != d else 0 for k in range(nd)]
        pieces = []
        for lab in labs:
            size = list(csize)
            size[d] = lab.shape[d]
            pieces.append(lab.c.expand(size))
        self.t.check_elements(sum(p.numel() for p in pieces), "a concatenation")
        self.t.set(out, compact(torch.cat(pieces, d), tuple(out.shape)))

    def pad(self, args: tuple, out: torch.Tensor) -> None:
        lab = self.t.rooted(args[0])
        pads = list(args[1])
        c = lab.c
        nd = c.dim()
        for i in range(len(pads) // 2):
            d = nd - 1 - i
            lo, hi = int(pads[2 * i]), int(pads[2 * i + 1])
            if c.shape[d] == 1 or (lo == 0 and hi == 0):
                continue
            if lo < 0 or hi < 0:  # cropping channels at fixed positions
                self._fixed(lab, d, lab.shape[d], "cropped at fixed channel positions by a negative pad")
                c = c.narrow(d, max(0, -lo), c.shape[d] - max(0, -lo) - max(0, -hi))
                continue
            parts = [torch.full(c.shape[:d] + (lo,) + c.shape[d + 1 :], NONE, dtype=c.dtype), c,
                     torch.full(c.shape[:d] + (hi,) + c.shape[d + 1 :], NONE, dtype=c.dtype)]
            c = torch.cat(parts, d)
        self.t.set(out, compact(c, tuple(out.shape)))

    # ------------------------------------------------------------------ channel-preserving ops

    def spatial(self, name: str, src: torch.Tensor, outs: list[torch.Tensor]) -> None:
        """Pooling, upsampling, spatial padding: channels pass through, spatial positions mix."""
        lab = self.t.rooted(src)
        if any(d > 1 for d in lab.varying()):
            self.t.freeze(lab, f"{name} mixes positions whose channels differ")
        o = outs[0]
        c = lab.c.reshape(-1)[:1].reshape((1,) * o.dim()) if any(d > 1 for d in lab.varying()) else \
            lab.c.reshape(tuple(lab.c.shape[:2]) + (1,) * (o.dim() - min(2, lab.c.dim())))
        for t in outs:
            self.t.set(t, Lab(c, tuple(t.shape)) if t.shape == o.shape else const(tuple(t.shape)))

    def batch_norm(self, name: str, args: tuple, outs: list[torch.Tensor]) -> None:
        """Functional batch norm: one BatchNorm's own tensors make it that layer (ChannelTracer.bn_op);
        any other per-channel parameters follow the channels of dimension 1."""
        if self.t.bn_op(args, outs):
            return
        x = args[0]
        nd = x.dim()
        params = [a for a in args[1:5] if isinstance(a, torch.Tensor)]
        labs = [self.t.rooted(x)]
        for p in params:
            pl = self.t.rooted(p)
            labs.append(Lab(pl.c.reshape((1, -1) + (1,) * (nd - 2)) if pl.c.numel() > 1 else pl.c.reshape((1,) * nd),
                            (1, p.numel()) + (1,) * (nd - 2)))
        lab = self.combine(labs, tuple(x.shape), name)
        self.t.set(outs[0], lab)
        for o in outs[1:]:
            self.t.set(o, const(tuple(o.shape)))

    def norm(self, name: str, args: tuple, outs: list[torch.Tensor]) -> None:
        x = args[0]
        lab = self.t.rooted(x)
        if name == "native_group_norm":
            mixed = [d for d in lab.varying() if d >= 1]
            params = [a for a in args[1:3] if isinstance(a, torch.Tensor)]
            why = "GroupNorm normalises over groups of channels, so cutting one changes the others"
        else:
            n = len(args[1])
            mixed = [d for d in lab.varying() if d >= x.dim() - n]
            params = [a for a in args[2:4] if isinstance(a, torch.Tensor)]
            why = "LayerNorm normalises over them, so cutting one changes the others"
        if mixed:
            self.t.freeze(lab, why)
            for p in params:
                self.t.freeze(self.t.get(p), why)
        else:
            for p in params:
                self.t.freeze(self.t.get(p), why)
        self.t.set(outs[0], lab)
        for o in outs[1:]:
            self.t.set(o, const(tuple(o.shape)))

    def channel_shuffle(self, args: tuple, out: torch.Tensor) -> None:
        x, groups = args[0], int(args[1])
        lab = self.t.rooted(x)
        n, c = x.shape[0], x.shape[1]
        rest = tuple(x.shape[2:])
        grid = self.regroup(compact(lab.full.reshape(n, groups, c // groups, *rest)))
        shuffled = grid.full.transpose(1, 2).reshape(tuple(x.shape))
        self.t.set(out, compact(shuffled, tuple(out.shape)))

    def pixel_shuffle(self, args: tuple, out: torch.Tensor) -> None:
        """Depth to space: the r*r channels that become one output channel are cut together."""
        x, r = args[0], int(args[1])
        lab = self.t.rooted(x)
        if any(d != x.dim() - 3 for d in lab.varying()):
            self.opaque("pixel_shuffle", args, {}, [out])
            return
        atoms = lab.c.reshape(-1).numpy().reshape(-1, r * r)
        for k in range(1, r * r):
            self.t.atoms.union(atoms[:, 0], atoms[:, k])
        size = [1] * out.dim()
        size[out.dim() - 3] = atoms.shape[0]
        self.t.set(out, Lab(torch.from_numpy(self.t.atoms.find(atoms[:, 0])).reshape(size), tuple(out.shape)))

    def reduction(self, name: str, args: tuple, kwargs: dict, outs: list[torch.Tensor]) -> None:
        x = args[0]
        if not isinstance(x, torch.Tensor):
            self.opaque(name, args, kwargs, outs)
            return
        lab = self.t.rooted(x)
        nd = x.dim()
        dims = self._reduced_dims(name, args, kwargs, nd)
        mixed = [d for d in dims if lab.c.dim() > d and lab.c.shape[d] > 1]
        if mixed:
            self.t.freeze(lab, f"{name.lstrip('_')} over dimension {mixed[0]} combines them")
            atom = self.t.frozen_atom(f"{name.lstrip('_')} over dimension {mixed[0]} combines them")
            for o in outs:
                self.t.set(o, single(atom, tuple(o.shape)) if tuple(o.shape) != lab.shape else lab)
            return
        for o in outs:
            shape = tuple(o.shape)
            if shape == lab.shape:
                self.t.set(o, lab)
                continue
            c = lab.c
            if len(shape) == nd:  # keepdim, or topk/kthvalue shrinking a dimension
                for k in range(nd):
                    if shape[k] != lab.shape[k] and c.shape[k] > 1:
                        c = c.narrow(k, 0, 1)
            else:
                for k in sorted(dims, reverse=True):
                    if k < c.dim():
                        c = c.narrow(k, 0, 1).squeeze(k)
                if c.dim() != len(shape):
                    c = c.reshape(-1)[:1].reshape((1,) * len(shape))
            self.t.set(o, compact(c, shape))

    @staticmethod
    def _reduced_dims(name: str, args: tuple, kwargs: dict, nd: int) -> list[int]:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if name in ("topk",):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else -1)
        if name in ("kthvalue",):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else -1)
        if name in ("sort", "argsort"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 and isinstance(args[1], int) else -1)
        if isinstance(dim, bool) or dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
            return list(range(nd))
        if isinstance(dim, (list, tuple)):
            return sorted({_dim(int(d), nd) for d in dim})
        if isinstance(dim, int):
            return [_dim(dim, nd)] if nd else []
        return list(range(nd))

    def data_move(self, func: Any, name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        """Ops that only move elements: run the op on the labels themselves."""
        lab = self.t.rooted(args[0])
        moved = self._moved_dims(name, args, lab)
        follows = name in ("flip", "repeat", "tile")  # the pruned op does the same to fewer channels
        if moved is None or (not follows and any(lab.c.shape[d] > 1 for d in moved)):
            self.t.freeze(lab, f"{name} picks channels at fixed positions")
        self.t.check_elements(out.numel(), name)
        rest = [a.cpu() if isinstance(a, torch.Tensor) else
                [i.cpu() if isinstance(i, torch.Tensor) else i for i in a] if isinstance(a, list) else a
                for a in args[1:]]
        try:
            moved_labels = func(lab.full, *rest, **kwargs)
        except (RuntimeError, TypeError, ValueError, IndexError):
            self.opaque(name, args, kwargs, [out])
            return
        if not isinstance(moved_labels, torch.Tensor) or tuple(moved_labels.shape) != tuple(out.shape):
            self.opaque(name, args, kwargs, [out])
            return
        self.t.set(out, compact(moved_labels, tuple(out.shape)))

    @staticmethod
    def _moved_dims(name: str, args: tuple, lab: Lab) -> list[int] | None:
        nd = len(lab.shape)
        if name in ("index_select", "gather", "take_along_dim", "roll", "unfold", "narrow_copy"):
            d = args[1] if len(args) > 1 else None
            if name == "roll":
                d = args[2] if len(args) > 2 else None
                if d is None or (isinstance(d, (list, tuple)) and not d):
                    return list(range(nd))
            if isinstance(d, (list, tuple)):
                return [_dim(int(k), nd) for k in d]
            return None if d is None else [_dim(int(d), nd)]
        if name == "index":
            return [k for k, i in enumerate(args[1]) if i is not None]
        if name == "flip":
            return [_dim(int(k), nd) for k in args[1]]
        if name in ("repeat", "tile"):
            reps = list(args[1])
            off = len(reps) - nd
            return [k for k in range(nd) if 0 <= k + off < len(reps) and reps[k + off] != 1]
        if name == "pixel_unshuffle":
            return [nd - 2, nd - 1]
        return None
