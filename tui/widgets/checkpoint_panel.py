"""Side panel of the checkpoint browser: what `engine.checkpoint.peek` (or, for an ONNX file,
`engine.deploy.onnxfile.browse`) read, or a run's status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.runs import RunInfo
from tui.widgets.ckpt_format import arch_label, fmt_count, fmt_size
from tui.widgets.ckpt_tree import STATE_STYLES
from tui.widgets.run_tail import raw_status, run_fraction, stage_position


def fmt_metric(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key == "accuracy" or key.startswith("acc"):
            return f"{100 * value:.2f}%"
        return f"{value:.4g}"
    return str(value)


def fmt_epoch(epoch: Any) -> str | None:
    """Stored epochs count from 0; people (and the run's log, "epoch 5/5") count from 1."""
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        return None if epoch is None else str(epoch)
    return str(epoch + 1)


def _rows(table: Table, rows: list[tuple[str, Any]]) -> None:
    for key, value in rows:
        if value is None or value == "":
            continue
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))


def _table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def peek_renderable(info: dict[str, Any]) -> Group:
    """The panel for one checkpoint: its facts, or the reason it cannot be read."""
    title = Text(Path(info.get("path", "?")).name, style="bold")
    table = _table()
    _rows(table, [("size", fmt_size(info.get("size")))])
    if "error" in info:
        parts: list[Any] = [title, table, Text("")]
        if info.get("needs_trust"):
            parts.append(Text("Holds pickled Python objects: opening it runs code from the file.", style="bold yellow"))
            parts.append(Text("Press enter to open it in the inspector; you will be asked to confirm.", style="yellow"))
        else:
            parts.append(Text("Cannot be read:", style="bold red"))
        parts.append(Text(str(info["error"]), style="red" if not info.get("needs_trust") else "dim"))
        return Group(*parts)
    arch = info.get("arch")
    if isinstance(arch, dict):
        arch_text = arch_label(arch)
        classes = f"{arch.get('num_classes')} classes, {arch.get('in_channels', 3)} input channels"
        from engine.trust import is_module_class

        if is_module_class(arch.get("name")):  # the registry rule: opening asks before it imports
            classes += "; your own class: opening asks before building it"
    else:
        arch_text, classes = "unknown (a bare state_dict: the inspector needs a slimlab checkpoint)", None
    _rows(table, [
        ("format", info.get("format")),
        ("arch", arch_text),
        ("", classes),
        ("stage", info.get("stage")),
        ("epoch", fmt_epoch(info.get("epoch"))),
        ("params", f"{fmt_count(info.get('params'))} ({info.get('params')})" if info.get("params") is not None else None),
        ("BN layers", info.get("bn_layers")),
        ("tensors", info.get("tensors")),
        ("resumable", "yes (optimizer state inside)" if info.get("resumable") else None),
    ])
    parts = [title, table]
    metrics = info.get("metrics") or {}
    if metrics:
        mt = _table()
        keys = [k for k in ("accuracy", "val_loss", "loss", "epoch_time") if k in metrics]
        keys += [k for k in sorted(metrics) if k not in keys and k != "epoch"
                 and isinstance(metrics[k], (int, float))][:8]
        _rows(mt, [(k, fmt_metric(k, metrics[k])) for k in keys])
        parts += [Text(""), Text("metrics", style="bold"), mt]
    plan = info.get("plan")
    if plan:
        pt = _table()
        _rows(pt, [
            ("groups", plan.get("groups")),
            ("prunable", f"{plan.get('prunable_before')} → {plan.get('prunable_after')} channels"
             if "prunable_before" in plan else None),
            ("channels", f"{plan.get('channels_before')} → {plan.get('channels_after')}"
             + (" (all)" if "prunable_before" in plan else "") if "channels_before" in plan else None),
            ("params", f"{fmt_count(plan.get('params_before'))} → {fmt_count(plan.get('params_after'))}"
             if "params_before" in plan else None),
            ("FLOPs", f"{fmt_count(plan.get('flops_before'))} → {fmt_count(plan.get('flops_after'))}"
             if "flops_before" in plan else None),
        ])
        parts += [Text(""), Text("pruned (plan)", style="bold"), pt]
    parts += [Text(""), Text("enter: open in the inspector", style="dim")]
    return Group(*parts)


def onnx_renderable(info: dict[str, Any]) -> Group:
    """The panel for an ONNX file: what its graph and slimlab's metadata say."""
    title = Text(Path(info.get("path", "?")).name, style="bold")
    table = _table()
    _rows(table, [("size", fmt_size(info.get("size")))])
    if "error" in info:
        return Group(title, table, Text(""), Text("Cannot be read:", style="bold red"), Text(str(info["error"]), style="red"))
    names = info.get("classes") or []
    classes = (f"{len(names)}: {', '.join(map(str, names[:6]))}{' …' if len(names) > 6 else ''}" if names
               else info.get("num_classes"))
    fp32_layers = info.get("fp32_layers")
    _rows(table, [
        ("format", f"ONNX, opset {info.get('opset')}"),
        ("precision", Text(str(info.get("precision")).upper(), style="bold")),
        ("input", f"{info.get('input')}" + (" (any batch)" if info.get("batch") == "dynamic" else "")),
        ("classes", classes),
        *quality_rows(info),
        ("kept fp32", (", ".join(fp32_layers) or "none") if isinstance(fp32_layers, list) else None),
        ("calibration", info.get("method")),
        ("params", f"{fmt_count(info.get('params'))} ({info.get('params')})" if info.get("params") is not None else None),
        ("FLOPs", fmt_count(info.get("flops")) if info.get("flops") is not None else None),
        ("arch", info.get("arch")),
        ("from stage", info.get("stage")),
        ("producer", info.get("producer")),
    ])
    hint = ("exported by slimlab: run it with onnxruntime; the inspector takes PyTorch checkpoints"
            if info.get("slimlab") else "not written by slimlab: no recorded accuracy or dataset")
    return Group(title, table, Text(""), Text(hint, style="dim"))


def quality_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """How good an ONNX file is, in its task's words: a classifier's accuracy in %, a detector's
    mAP50-95 and mAP50 as Ultralytics prints them (0..1); the fp32 figure of an INT8 file beside it."""
    fp32 = info.get("fp32_accuracy")  # the task's metric of the fp32 file (engine/deploy/quantize.py)
    if info.get("task") == "detect" or isinstance(info.get("mAP50_95"), float):
        m = info.get("mAP50_95")
        return [
            ("mAP50-95", f"{m:.4f} (onnxruntime, validation split)" if isinstance(m, float) else None),
            ("mAP50", f"{info['mAP50']:.4f}" if isinstance(info.get("mAP50"), float) else None),
            ("fp32", f"mAP50-95 {fp32:.4f} before quantization" if isinstance(fp32, float) else None),
        ]
    accuracy = info.get("accuracy")
    return [
        ("accuracy", f"{100 * accuracy:.2f}% (onnxruntime, validation split)" if isinstance(accuracy, float) else None),
        ("fp32", f"{100 * fp32:.2f}% before quantization" if isinstance(fp32, float) else None),
    ]


def run_renderable(info: RunInfo) -> Group:
    table = _table()
    pos = stage_position(raw_status(info))
    state = Text(info.state, style=STATE_STYLES.get(info.state, ""))
    elapsed = info.elapsed
    _rows(table, [
        ("state", state),
        ("preset", info.preset),
        ("progress", f"run {100 * run_fraction(info, raw_status(info)):.0f}%"
                     + (f" · stage {info.stage}" + (f" {pos[0]}/{pos[1]}" if pos else "")
                        + f" {100 * info.progress:.0f}%" if info.stage else "")),
        model_row(info),
        ("started", time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)) if info.started else None),
        ("elapsed", f"{elapsed:.0f} s" if elapsed is not None else None),
    ])
    parts: list[Any] = [Text(f"run {info.name}", style="bold"), table]
    if info.error:
        parts += [Text(""), Text(str(info.error), style="red")]
    parts += [Text(""), Text("m: follow it on the monitor screen · expand weights/ for its checkpoints", style="dim")]
    return Group(*parts)


def model_row(info: RunInfo) -> tuple[str, Any]:
    """The run's headline: the metric of the model it hands on (status.json `model_stage`), never a
    control stage's."""
    st = raw_status(info)
    stage = st.get("model_stage")
    where = f" ({stage})" if isinstance(stage, str) else ""
    if isinstance(info.best_accuracy, int | float) and not isinstance(info.best_accuracy, bool):
        return ("accuracy", f"{100 * info.best_accuracy:.2f}%{where}")
    m = st.get("best_mAP50_95")
    if isinstance(m, int | float) and not isinstance(m, bool):
        return ("mAP50-95", f"{m:.4f}{where}")
    return ("accuracy", None)


class CheckpointPanel(VerticalScroll):
    """Shows one thing at a time: a checkpoint, a run directory, a folder, or a message."""

    DEFAULT_CSS = """
    CheckpointPanel > Static { width: 1fr; }
    """

    def compose(self):
        yield Static("Move to a checkpoint to see what it holds.", id="panel-body")

    shown: Any = None  # the renderable on display
    kind = "empty"  # what it shows: empty, reading, peek, onnx, run or folder

    def _set(self, renderable: Any, kind: str) -> None:
        self.shown, self.kind = renderable, kind
        self.query_one("#panel-body", Static).update(renderable)
        self.scroll_home(animate=False)

    def show_reading(self, path: Path) -> None:
        self._set(Text.assemble((path.name, "bold"), "\n\nreading …"), "reading")

    def show_peek(self, info: dict[str, Any]) -> None:
        if info.get("kind") == "onnx":
            self._set(onnx_renderable(info), "onnx")
        else:
            self._set(peek_renderable(info), "peek")

    def show_run(self, info: RunInfo) -> None:
        self._set(run_renderable(info), "run")

    def show_folder(self, path: Path) -> None:
        self._set(Text.assemble((path.name or str(path), "bold"), "\n\n",
                                ("folder: enter expands it", "dim")), "folder")
