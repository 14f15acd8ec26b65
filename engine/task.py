"""The seam between the orchestrator (engine/pipeline.py) and a task: classification, or a detection family.

The orchestrator runs the stages of a preset in one run directory: their order and rounds, status
and resume, each stage's output, `original` (the model before the latest prune), the summary and
the comparison. Everything that depends on what the model *does* comes from the run's task:

- `kind`: the torch-free description below (its metric, the stage types it runs, its label);
- models: `fresh(spec_model)` builds the preset's model or adopts its checkpoint as a `Current`;
  `input_shape()` is the (C, H, W) the model is traced, measured and exported at;
- training: `runners()` maps the training stage types (train, sparse, finetune, distill, scratch, uniform)
  to the task's own runners; `train(stage, resume, cur, callbacks, ...)` trains one stage with
  slimlab's callbacks (sparsity penalty, pruned-at-target monitor, teacher);
- measuring: `evaluate(model)` gives the metric dict of a model on the val split (`metric.key` in
  it), `calibrate(model)` re-estimates a cut model's BatchNorm statistics, `measure(cur, out)`
  the figures a stage records (metric, params, FLOPs, size, latency);
- deploying: `export_shape(input_size)`, `export_file(...)` (the checked ONNX file of a model and
  its record) and `quantize_data(info, samples)` (calibration batches prepared as the ONNX file
  expects, and the scorer of ONNX files on the val split) for the export and quantize stages.

Stages that are the same for every task (prune, sweep, evaluate, export, quantize, compress) live
with their concept (engine/slim/stages.py, engine/deploy/stages.py) and call only these. A stage
type a task does not run is refused by `TaskKind.refusal`, in the preset check and at run time
alike, with the same message.

Nothing here imports torch: presets validate, and the workbench labels runs, without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn


@dataclass
class Current:
    """A model as the stages hand it on: the module, its arch (how to rebuild it) and its plan."""

    model: nn.Module
    arch: dict
    plan: dict | None


@dataclass(frozen=True)
class Metric:
    """The figure a task's stages are judged by (higher is better for both tasks slimlab has)."""

    key: str  # in metrics.jsonl, summary.json and sweep.json rows
    label: str  # what people call it: accuracy, mAP50-95
    columns: tuple[str, ...]  # the figures a comparison row carries for a stage
    record: tuple[str, ...]  # the figures a deployed file's record carries
    percent: bool  # shown as a percentage (accuracy) or as a 0..1 figure (mAP, as Ultralytics prints it)

    def format(self, value: float) -> str:
        return f"{value:.2%}" if self.percent else f"{value:.4f}"

    def named(self, value: float) -> str:
        return f"{self.label} {self.format(value)}"


ACCURACY = Metric("accuracy", "accuracy", ("accuracy", "test_accuracy"), ("accuracy",), percent=True)
MAP = Metric("mAP50_95", "mAP50-95", ("mAP50", "mAP50_95"), ("mAP50", "mAP50_95", "precision", "recall"), percent=False)
METRICS = {m.key: m for m in (ACCURACY, MAP)}

TRAINING_STAGES = ("train", "sparse", "finetune", "distill", "scratch", "uniform")
SHARED_STAGES = ("prune", "sweep", "evaluate", "export", "quantize", "compress")


@dataclass(frozen=True)
class TaskKind:
    """One task implementation, described without importing it."""

    name: str  # classify | ultralytics | yolov5
    task: str  # the preset's `task`
    label: str  # in messages: "classification models", "Ultralytics detection models"
    metric: Metric
    stages: tuple[str, ...]  # the stage types it runs
    impl: str  # module:Class of its Task
    instead: dict[str, str] = field(default_factory=dict)  # stage type -> what to do instead
    teacher: bool = True  # finetune/distill stages may have a teacher
    # deployed files are timed at these batch sizes; speed-ups are read at `speedup_batch` (a
    # classifier serves batches, a detector on a camera one frame at a time)
    latency_batches: tuple[int, ...] = (1, 32)
    speedup_batch: int = 32
    feature_types: tuple[str, ...] = ("cosine", "hint")  # the feature terms its distillation takes
    kd_keys: tuple[str, ...] = ("T", "w_kd", "w_ce")  # the kd weights it reads
    export_formats: bool = False  # the export stage's `formats` (other runtimes than onnxruntime)

    def refusal(self, stage: Any) -> str | None:
        """Why this task cannot run `stage` (a preset stage), or None. One message shape everywhere."""
        what = None
        if stage.type not in self.stages:
            what = f"a {stage.type} stage"
        elif not self.teacher and (getattr(stage, "teacher", None) or getattr(stage, "kd", None)
                                   or getattr(stage, "features", None)):
            what = "distillation (a teacher, kd or feature terms)"
        elif stage.type == "export" and getattr(stage, "formats", None) and not self.export_formats:
            what = f"export formats ({', '.join(stage.formats)})"
            return (f"stage {stage.name}: {what} are not available for {self.label}; they write Ultralytics "
                    "detection models (a classifier deploys as ONNX, with a quantize stage for INT8)")
        else:
            what = self._distill_refusal(stage)
        if what is None:
            return None
        instead = self.instead.get(stage.type, "")
        return f"stage {stage.name}: {what} is not available for {self.label}" + (f"; {instead}" if instead else "")

    def _distill_refusal(self, stage: Any) -> str | None:
        kd = getattr(stage, "kd", None)
        if kd is not None:
            extra = [k for k, v in kd.model_dump().items() if k not in self.kd_keys and v is not None]
            if extra:
                return f"kd.{extra[0]} (the DFL box-distribution weight of detection KD)"
        for i, term in enumerate(getattr(stage, "features", None) or []):
            if term.type not in self.feature_types:
                return f"features[{i}].type {term.type} (channel-wise distillation is for dense prediction)"
        return None

    def create(self, run: Any) -> Task:
        module, _, cls = self.impl.partition(":")
        return getattr(importlib.import_module(module), cls)(run)


CLASSIFY = TaskKind(
    name="classify", task="classify", label="classification models", metric=ACCURACY,
    stages=TRAINING_STAGES + SHARED_STAGES, impl="engine.classify.task:ClassifyTask",
)
ULTRALYTICS = TaskKind(
    name="ultralytics", task="detect", label="Ultralytics detection models", metric=MAP,
    stages=("train", "sparse", "finetune", "distill", "prune", "sweep", "evaluate", "export", "quantize"),
    impl="engine.detect.task:UltralyticsTask", latency_batches=(1, 8), speedup_batch=1,
    feature_types=("cosine", "hint", "cwd"), kd_keys=("T", "w_kd", "w_ce", "w_box"),
    export_formats=True,
    instead={
        "compress": "a detection run deploys with export and quantize stages (ONNX and INT8, each with its mAP)",
        "scratch": "train the pruned architecture from its yaml as a run of its own",
        "uniform": "train the model at a smaller width multiplier as a run of its own",
    },
)
YOLOV5 = TaskKind(
    name="yolov5", task="detect", label="YOLOv5-repository detection models", metric=MAP,
    stages=("train", "sparse", "finetune", "prune", "sweep", "evaluate", "export", "quantize"),
    impl="engine.detect.yolov5.task:Yolov5Task", latency_batches=(1, 8), speedup_batch=1, teacher=False,
    instead={
        "compress": "a detection run deploys with export and quantize stages (ONNX and INT8, each with its mAP)",
        "scratch": "train the pruned architecture from its yaml as a run of its own",
        "distill": "detection KD is written for Ultralytics' anchor-free heads; finetune without a teacher",
    },
)
KINDS = {k.name: k for k in (CLASSIFY, ULTRALYTICS, YOLOV5)}


def kind_of(spec: Any) -> TaskKind:
    """The task implementation a RunSpec runs with: for task detect, the family of its model
    (`yolov5:` archs and YOLOv5-repository checkpoints, else Ultralytics; engine/detect/spec.py)."""
    if spec.task != "detect":
        return CLASSIFY
    from engine.detect.spec import family

    return YOLOV5 if family(spec.model) == "yolov5" else ULTRALYTICS


def metric_of(task: str | None) -> Metric:
    """The metric of runs of a preset `task` (a run directory's spec), accuracy when unknown."""
    return MAP if task == "detect" else ACCURACY


class Task(Protocol):
    """What the orchestrator and the shared stages call (see the module docstring)."""

    kind: TaskKind

    def fresh(self, spec_model: Any) -> Current: ...
    def input_shape(self) -> tuple[int, int, int]: ...
    def runners(self) -> dict[str, Callable[[Any, dict | None], dict]]: ...
    def train(self, stage: Any, resume: dict | None, cur: Current, callbacks: list[Any] = (), *,
              loss_fn: Any = None, selection: Any = None) -> dict[str, Any]: ...
    def evaluate(self, model: nn.Module, images: int | None = None) -> dict[str, float]: ...
    def calibrate(self, model: nn.Module) -> nn.Module: ...
    def measure(self, cur: Current, out: Any, metrics: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def export_shape(self, input_size: str | None, where: str) -> tuple[int, int, int]: ...
    def export_file(self, cur: Current, out: Any, *, shape: tuple[int, int, int], batch: int | None, opset: int,
                    meta: dict, progress: Callable[[float, str], None]) -> dict[str, Any]: ...
    def quantize_data(self, info: Any, samples: int, where: str) -> Any: ...  # engine.deploy.quantize.QuantizeData
    # only where kind.export_formats (an export stage's `formats`: other runtimes than onnxruntime)
    def refuse_formats(self, names: list[str], where: str) -> None: ...
    def export_runtime(self, cur: Current, fmt: str, *, stem: str, imgsz: int, samples: int,
                       progress: Callable[[float, str], None]) -> dict[str, Any]: ...
    def runner(self, path: Any, runtime: str, threads: int) -> Any: ...  # engine.deploy.latency.Runner
