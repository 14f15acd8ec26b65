"""Presets: YAML recipes validated into a resolved RunSpec.

A preset names the model, the data, the training settings and the list of stages.
Validation errors are turned into one message naming the file, the key and the fix
(see `load_preset`), because a typo in a preset should never start a long run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.errors import PresetError
from engine.messages import plain_message
from engine.models import catalog
from engine.slim.spec import S_HINT, AutoS, PruneRule, TargetSpec, min_keep_value
from engine.stage_graph import check_stage_graph


def check_input_size(v: str | None) -> str | None:
    """A CxHxW input size; pydantic turns the ValueError into the preset's error message."""
    if v is not None:
        from engine.models.sizing import parse_input_size

        try:
            parse_input_size(v)
        except PresetError as e:
            raise ValueError(str(e)) from None
    return v


InputSize = Annotated[str | None, AfterValidator(check_input_size)]  # model.input_size, export's input_size


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Strict):
    arch: str = "vgg"
    kwargs: dict[str, Any] = Field(default_factory=dict)  # a "package.module:Class" value is that class
    checkpoint: Path | None = None  # start from these weights instead of random init
    input_size: InputSize = None  # CxHxW the model is traced and measured at; default: the data's


class DataSpec(Strict):
    dataset: str = "shapes"  # shapes | imagefolder | cifar10 | cifar100 | torchvision:<Name> | yolo (task detect)
    path: Path | None = None
    num_classes: int = Field(6, ge=2, le=10)  # shapes only
    train_size: int = Field(6000, ge=16)  # shapes only
    val_size: int = Field(1000, ge=16)  # shapes only
    image_size: int = Field(32, ge=8, le=2048)  # task detect: the training/validation size (imgsz)
    val_fraction: float = Field(0.1, gt=0, lt=1)  # held out of train when there is no val split
    # held out of train as the test split, for datasets without one (shapes, imagefolder)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    # true (random_crop + horizontal_flip), false, or a list of named ops (engine/data/augment_spec.py)
    augment: bool | list[str | dict[str, Any]] = Field(True, validate_default=True)
    # decoding processes when streaming, threads when decoding into memory; auto: the usable cores (max 8)
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # memory: decode everything once and keep it; none: stream from disk every epoch;
    # auto: memory while it fits a quarter of the available memory (image folders only stream)
    cache: Literal["auto", "memory", "none"] = "auto"
    seed: int = 0
    fallback: str | None = None  # dataset used instead when `path` does not exist (e.g. shapes)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        # One message instead of one per branch of the int | "auto" union.
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError(
            f"must be auto or a number of worker processes, 0 or more (0: decode in the training process); got {v!r}"
        )

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: bool | list) -> list:
        from engine.data.augment_spec import parse

        return parse(v)

    @model_validator(mode="after")
    def _fractions(self) -> DataSpec:
        if self.test_fraction > 0 and self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction} leave no "
                "training images; keep their sum below 1"
            )
        return self


class TrainingSpec(Strict):
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    step_gamma: float = Field(0.1, gt=0, le=1)
    amp: Literal["none", "fp16", "bf16"] = "none"
    accumulate: int = Field(1, ge=1)  # micro-batches per optimizer step
    clip_norm: float | None = Field(None, gt=0)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sync_bn: bool = False
    log_every: int = Field(10, ge=1)  # steps between metrics lines
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: torch's default

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @field_validator("step_milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v):
            raise ValueError("milestones are fractions of the epochs, each in (0, 1)")
        return sorted(v)


class TrainingOverride(Strict):
    """Per-stage changes to the top-level training settings (all optional)."""

    epochs: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    optimizer: Literal["sgd", "adamw", "adam"] | None = None
    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    schedule: Literal["cosine", "step", "constant"] | None = None
    warmup_epochs: float | None = Field(None, ge=0)
    amp: Literal["none", "fp16", "bf16"] | None = None
    accumulate: int | None = Field(None, ge=1)
    clip_norm: float | None = Field(None, gt=0)


class StageBase(Strict):
    name: str | None = None  # unique within a run; defaults to the type (with -2, -3 ...)
    training: TrainingOverride = Field(default_factory=TrainingOverride)
    model: ModelSpec | None = None  # start this stage from a fresh model instead of the current one
    start: str | None = None  # start from the output of this earlier stage (its name)


class EarlyStop(Strict):
    patience: int = Field(ge=1)  # epochs without improvement of the selection metric
    min_delta: float = Field(0.0, ge=0)  # smaller gains do not count as improvement


class TrainingStageKeys(Strict):
    """Keys of every training stage: which epoch is the output, and when to stop early."""

    # best: the epoch with the best selection metric (val accuracy; a sparse stage with a target:
    # acc_pruned_at_target); last: the final epoch. None: best, except a sparse stage without target.
    select: Literal["best", "last"] | None = None
    early_stop: EarlyStop | None = None


class TrainStage(StageBase, TrainingStageKeys):
    type: Literal["train"]
    target: TargetSpec | None = None  # log acc_pruned_at_target at every epoch end
    monitor_samples: int = Field(2000, ge=1)  # val images the pruned-at-target accuracy uses
    monitor_images: int | None = Field(None, ge=1)  # task detect: val images of the pruned-at-target mAP (500)


class SparseStage(StageBase, TrainingStageKeys):
    type: Literal["sparse"]
    s: float | Literal["auto"] = 1e-4
    auto_s: AutoS = Field(default_factory=AutoS)
    decay: bool = False  # s * (1 - 0.9 * epoch / epochs)
    exclude: list[str] = Field(default_factory=list)  # BN name patterns left unpenalised
    target: TargetSpec | None = None  # default: the rule of the next prune stage
    monitor_samples: int = Field(2000, ge=1)  # val images the pruned-at-target accuracy uses
    monitor_images: int | None = Field(None, ge=1)  # task detect: val images of the pruned-at-target mAP (500)

    @field_validator("s", mode="before")
    @classmethod
    def _s(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                v = None
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 1:
            raise ValueError(S_HINT)
        return float(v)


class PruneStage(StageBase, PruneRule):
    type: Literal["prune"]


class FeatureTerm(Strict):
    type: Literal["cosine", "hint", "cwd"]  # cwd: channel-wise distillation, task detect
    student: str  # module path in the student
    teacher: str  # module path in the teacher
    weight: float = Field(1.0, ge=0)
    projection: Literal["pool", "linear"] = "pool"  # cosine only
    regressor: Literal["1x1", "3x3"] = "1x1"  # hint only


class KDTerm(Strict):
    # task detect: unset keys take the detection defaults (engine/detect/distill.py: T 2, w_kd 1,
    # w_box 1, w_ce 1, w_ce weighing Ultralytics' detection loss)
    T: float = Field(2.0, gt=0)
    w_kd: float = Field(0.25, ge=0)
    w_ce: float = Field(0.75, ge=0)
    w_box: float | None = Field(None, ge=0)  # task detect: the DFL box-distribution KD


class TeacherMixin(Strict):
    # "original": the model before pruning; a stage name: that stage's output; else a checkpoint path
    teacher: str | None = None
    kd: KDTerm | None = None
    features: list[FeatureTerm] = Field(default_factory=list)


REWOUND = ("lr", "schedule", "warmup_epochs")  # the settings a rewinding finetune takes from the original


class FinetuneStage(StageBase, TeacherMixin, TrainingStageKeys):
    type: Literal["finetune"]
    # learning-rate rewinding (Renda et al. 2020): the original schedule's lr and shape (its warm-up
    # in proportion) replayed over this stage's epochs, instead of a small constant lr. Unset: rewind
    # unless the stage sets its own training.lr, schedule or warmup_epochs
    rewind: bool | None = None

    @model_validator(mode="after")
    def _rewind_owns_the_lr(self) -> FinetuneStage:
        own = [k for k in REWOUND if getattr(self.training, k) is not None]
        if self.rewind and own:
            raise ValueError(
                f"rewind: true replays the original schedule's {', '.join(REWOUND)}; this stage also sets "
                f"training.{own[0]}. Remove it (the original's applies), or set rewind: false to use your own"
            )
        return self


def rewinds(stage: Any) -> bool:
    """Whether a stage replays the original schedule: a finetune with rewind true, or unset and no lr,
    schedule or warm-up of its own."""
    if stage.type != "finetune":
        return False
    if stage.rewind is None:
        return not any(getattr(stage.training, k) is not None for k in REWOUND)
    return stage.rewind


class DistillStage(StageBase, TeacherMixin, TrainingStageKeys):
    type: Literal["distill"]
    teacher: str  # required here

    @model_validator(mode="after")
    def _has_loss(self) -> DistillStage:
        if self.kd is None and not self.features:
            self.kd = KDTerm()
        return self


class SweepStage(StageBase):
    type: Literal["sweep"]
    ratios: list[float] = Field(default_factory=lambda: [round(0.05 * i, 2) for i in range(19)])
    min_keep: float = Field(1, ge=0)
    round_to: int = Field(1, ge=1)
    score: Literal["max", "mean", "l2"] = "max"
    ignore: list[str] = Field(default_factory=list)
    val_images: int | None = Field(None, ge=1)  # task detect: mAP on the first N validation images

    @field_validator("min_keep")
    @classmethod
    def _min_keep(cls, v: float) -> float:
        min_keep_value(v)
        return v

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 <= r < 1 for r in v):
            raise ValueError("ratios are fractions of channels removed, each in [0, 1)")
        return v


class EvaluateStage(StageBase):
    type: Literal["evaluate"]


class ControlKeys(Strict):
    """How long a control trains (engine/slim/scratch.py, `control_epochs`), unless training.epochs says.

    epochs: as many epochs as the stages that made the current model (Liu et al.'s Scratch-E);
    flops: as many training FLOPs as those stages spent (Scratch-B): their epochs weighted by the
    FLOPs of the model each trained (and the teacher's forward passes), over the control's FLOPs.
    Both numbers are reported whichever rule ran."""

    epochs_rule: Literal["epochs", "flops"] = "epochs"


class ScratchStage(StageBase, TrainingStageKeys, ControlKeys):
    """The control of pruning papers: the pruned architecture trained from random initialisation.

    Runs the epochs of `epochs_rule`; its output is reported beside the others but does not
    become the current model.
    """

    type: Literal["scratch"]


class UniformStage(StageBase, TrainingStageKeys, ControlKeys):
    """The other control: the unpruned architecture at one width multiplier for every layer, chosen so
    the model has about the pruned model's FLOPs, trained from random initialisation. If it matches
    the finetuned model, slimming found no better architecture than shrinking every layer alike.
    Its output is reported beside the others but does not become the current model."""

    type: Literal["uniform"]


class ExportStage(StageBase):
    """ONNX of the current model (and of the unpruned one, for the comparison); see engine/deploy."""

    type: Literal["export"]
    opset: int = Field(18, ge=13, le=23)
    batch: int | str = "dynamic"  # "dynamic" (a batch axis of any size) or a fixed batch size
    input_size: InputSize = None  # CxHxW; default: the data's
    original: bool = True  # also export the model before the run's first prune
    # task detect: the current model also written for other runtimes by Ultralytics' exporters
    # (engine/detect/runtimes.py), each with its mAP and a row in the comparison
    formats: list[Literal["openvino", "openvino-int8", "ncnn", "litert-int8"]] = []
    samples: int = Field(256, ge=1)  # calibration images (training split) of the INT8 formats

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each format once")
        return v

    @field_validator("batch")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if v == "dynamic" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("batch is 'dynamic' or a fixed batch size >= 1")


class QuantizeStage(StageBase):
    """Static INT8 of an export stage's ONNX with onnxruntime's quantizer, under an accuracy budget."""

    type: Literal["quantize"]
    source: str | None = None  # the export stage quantized; default: the latest one before this stage
    samples: int = Field(256, ge=1)  # calibration images from the training split
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    activations: Literal["auto", "uint8", "int8"] = "auto"  # auto: uint8 on x86, int8 elsewhere
    max_drop: float | None = Field(1.0, ge=0)  # accuracy points INT8 may lose; null: no guard


class CompressStage(StageBase):
    """Unstructured magnitude pruning plus k-means weight sharing, stored compactly."""

    type: Literal["compress"]
    sparsity: float = Field(0.8, ge=0, lt=1)  # fraction of conv/linear weights set to zero
    bits: int = Field(5, ge=4, le=8)  # 2**bits shared values per layer
    finetune_epochs: int = Field(0, ge=0)  # with the zeros held, before weight sharing


class LatencySpec(Strict):
    """How deployable artifacts are timed side by side (onnxruntime on the CPU)."""

    threads: int = Field(1, ge=1)  # intra-op threads, fixed for every artifact
    warmup: int = Field(5, ge=0)
    repeats: int = Field(30, ge=3)  # rounds per artifact and batch size; latency is their median
    runs: int = Field(3, ge=1)  # back-to-back runs per round, the fastest kept (interruptions only slow)


Stage = Annotated[
    TrainStage | SparseStage | PruneStage | FinetuneStage | DistillStage | SweepStage | EvaluateStage
    | ScratchStage | UniformStage | ExportStage | QuantizeStage | CompressStage,
    Field(discriminator="type"),
]
STAGE_TYPES = ("train", "sparse", "prune", "finetune", "distill", "sweep", "evaluate", "scratch", "uniform", "export",
               "quantize", "compress")
TRAINING_STAGES = ("train", "sparse", "finetune", "distill", "scratch", "uniform")
CONTROL_STAGES = ("scratch", "uniform")  # stages whose output never becomes the current model


class OutputSpec(Strict):
    runs_dir: Path = Path("runs")
    name: str | None = None  # defaults to the preset's name


class RunSpec(Strict):
    name: str = "run"
    description: str = ""
    task: Literal["classify", "detect"] = "classify"  # detect: Ultralytics YOLO (engine.detect)
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    stages: list[Stage] = Field(default_factory=lambda: [TrainStage(type="train")])
    rounds: int = Field(1, ge=1, le=20)  # repeats of the sparse -> prune -> finetune block
    latency: LatencySpec = Field(default_factory=LatencySpec)  # timing of deployable artifacts
    output: OutputSpec = Field(default_factory=OutputSpec)
    # package.module:Class names that files this run reads (checkpoints, teachers) may build;
    # model.arch and stages' model.arch are allowed already (see engine/trust.py)
    allow_archs: list[str] = Field(default_factory=list)

    @field_validator("allow_archs")
    @classmethod
    def _allow_archs(cls, v: list[str]) -> list[str]:
        for name in v:
            module, sep, attr = name.partition(":")
            if not catalog.is_external(name) or not module or not attr or ":" in attr:
                raise ValueError(f"{name!r} is not a package.module:Class (registry names need no allowing)")
        return v

    @model_validator(mode="after")
    def _stage_names(self) -> RunSpec:
        seen: dict[str, int] = {}
        for stage in self.stages:
            if stage.name is None:
                n = seen.get(stage.type, 0) + 1
                seen[stage.type] = n
                stage.name = stage.type if n == 1 else f"{stage.type}-{n}"
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dupes)}")
        for i, stage in enumerate(self.stages):
            if stage.start is not None and stage.start not in names[:i]:
                raise ValueError(f"stage {stage.name!r} starts from {stage.start!r}, which is not an earlier stage")
            if stage.type == "quantize":
                exports = [s.name for s in self.stages[:i] if s.type == "export"]
                if not exports or (stage.source is not None and stage.source not in exports):
                    raise ValueError(
                        f"stage {stage.name!r} quantizes the ONNX model of an earlier export stage"
                        + (f"; {stage.source!r} is not one ({', '.join(exports) or 'none before it'})" if stage.source
                           else "; add an export stage before it")
                    )
        from engine.slim.target import check_stage_targets

        check_stage_targets(self.stages)
        return self

    def training_for(self, stage: StageBase) -> TrainingSpec:
        """The top-level training settings with the stage's overrides applied; a rewinding finetune
        takes the original schedule's lr, shape and (proportional) warm-up over its own epochs."""
        changes = stage.training.model_dump(exclude_none=True)
        cfg = self.training.model_copy(update=changes)
        if rewinds(stage):
            original = self.original_training()
            warmup = original.warmup_epochs * cfg.epochs / original.epochs if original.epochs else 0.0
            cfg = cfg.model_copy(update={"lr": original.lr, "schedule": original.schedule,
                                         "warmup_epochs": round(warmup, 4)})
        return cfg

    def original_training(self) -> TrainingSpec:
        """The schedule that trained the unpruned model: the first train stage's, else the top-level one."""
        first = next((s for s in self.stages if s.type == "train"), None)
        return self.training_for(first) if first is not None else self.training

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------- loading


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at `loc` (best effort, for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = _unwrap_model(ann)
        elif part in STAGE_TYPES:
            current = _STAGE_CLASSES[part]
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


_STAGE_CLASSES: dict[str, type[BaseModel]] = {
    "train": TrainStage,
    "sparse": SparseStage,
    "prune": PruneStage,
    "finetune": FinetuneStage,
    "distill": DistillStage,
    "sweep": SweepStage,
    "evaluate": EvaluateStage,
    "scratch": ScratchStage,
    "uniform": UniformStage,
    "export": ExportStage,
    "quantize": QuantizeStage,
    "compress": CompressStage,
}


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in STAGE_TYPES and out.endswith("]"):
            continue  # pydantic adds the union tag to the path; the user never wrote it
        else:
            out += ("." if out else "") + str(part)
    return out


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid preset"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = _dotted(loc)
        if e["type"] == "extra_forbidden":
            known = _known_keys(RunSpec, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = f"; valid keys: {', '.join(known)}" if known else ""
            lines.append(f"  {key}: unknown key{hint}{valid}")
        elif e["type"] == "union_tag_invalid":
            tag = str((e.get("ctx") or {}).get("tag", ""))
            close = difflib.get_close_matches(tag, STAGE_TYPES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {key}: unknown stage type {tag!r}{hint}; use one of {', '.join(STAGE_TYPES)}")
        elif e["type"] == "union_tag_not_found":
            lines.append(f"  {key}: a stage needs a 'type': one of {', '.join(STAGE_TYPES)}")
        else:
            lines.append(f"  {key or '(top level)'}: {plain_message(e)}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`training.lr=0.05` -> (['training', 'lr'], 0.05); the value is read as YAML."""
    if "=" not in item:
        raise PresetError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.lr=0.05")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise PresetError(f"--set {item!r}: empty key part in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise PresetError(f"--set {item!r}: value is not valid YAML ({e})") from None
    return parts, value


def value_at(data: Any, parts: list[str]) -> Any:
    """The preset's value at a --set key's parts (['stages', '1', 's']), or None."""
    node = data
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def apply_override(data: dict, parts: list[str], value: Any, item: str) -> None:
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise PresetError(f"--set {item}: {'.'.join(parts[: i + 1])} is not an index into a list of {len(node)}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise PresetError(f"--set {item}: {'.'.join(parts[: i + 1])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise PresetError(f"--set {item}: {last} is not an index into a list of {len(node)}")
        node[int(last)] = value
    else:
        node[last] = value


def load_preset(path: str | Path, overrides: list[str] = (), base_dir: Path | None = None) -> RunSpec:
    """Read, override and validate a preset (a file or a built-in name). Raises PresetError with the whole story."""
    from engine import presets

    path = presets.locate(path)  # a file, or the name of a built-in preset (demo)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in presets.SUFFIXES)
        listed = f"; the presets in it: {', '.join(inside)}" if inside else ""
        raise PresetError(f"{path}: is a directory, not a preset file{listed}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PresetError(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if data is None or data == {}:
        raise PresetError(f"{path}: the preset is empty; a preset names at least its stages "
                          "(see the built-in ones: slimlab --batch demo, or engine/presets/demo.yaml)")
    if not isinstance(data, dict):
        raise PresetError(f"{path}: a preset is a mapping of keys (model, data, training, stages ...)")
    data.setdefault("name", path.stem)
    return spec_from_dict(data, overrides, source=str(path), base_dir=base_dir or path.parent)


def spec_from_dict(
    data: dict, overrides: list[str] = (), source: str = "preset", base_dir: Path | None = None
) -> RunSpec:
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy with plain types
    for item in overrides:
        parts, value = parse_override(item)
        apply_override(data, parts, value, item)
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as e:
        raise PresetError(format_errors(e, source)) from None
    check_names(spec, source)
    check_files(spec, source, base_dir)
    check_stage_graph(spec, source)
    return spec


def check_names(spec: RunSpec, source: str) -> None:
    """Unknown model or dataset names are preset errors, caught before any work starts."""
    from engine import data, models
    from engine.task import kind_of

    kind = kind_of(spec)
    for i, stage in enumerate(spec.stages):  # the stages this task cannot run: the same message as at run time
        why = kind.refusal(stage)
        if why:
            raise PresetError(f"{source}: stages[{i}]: {why}")
    if spec.task == "detect":
        from engine.detect.spec import check_detect_names

        check_detect_names(spec, source)
        return
    archs = [spec.model.arch] + [s.model.arch for s in spec.stages if s.model is not None]
    for arch in archs:
        if ":" in arch:
            continue  # torchvision:<name>, timm:<name> or module:Class, resolved when built
        if arch not in models.names():
            close = difflib.get_close_matches(arch, models.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PresetError(
                f"{source}: model.arch: unknown model {arch!r}{hint}; built-in: {', '.join(models.names())}, "
                "or torchvision:<name>, timm:<name>, or package.module:Class"
            )
    ds = spec.data.dataset
    if not ds.startswith("torchvision:") and ds not in data.names():
        close = difflib.get_close_matches(ds, data.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PresetError(
            f"{source}: data.dataset: unknown dataset {ds!r}{hint}; use one of {', '.join(data.names())} "
            "or torchvision:<Name>"
        )


def check_files(spec: RunSpec, source: str, base_dir: Path | None) -> None:
    """Paths named by the preset must exist before a run starts."""
    checks: list[tuple[str, Path | None]] = [("model.checkpoint", spec.model.checkpoint)]
    if spec.data.dataset not in ("shapes", "yolo_shapes") and not spec.data.fallback:
        if spec.data.path is None:
            raise PresetError(f"{source}: data.path: dataset {spec.data.dataset!r} needs a path to its files")
        checks.append(("data.path", spec.data.path))
    stage_names = {s.name for s in spec.stages}
    for i, stage in enumerate(spec.stages):
        if stage.model is not None:
            checks.append((f"stages[{i}].model.checkpoint", stage.model.checkpoint))
        teacher = getattr(stage, "teacher", None)
        if teacher and teacher != "original" and teacher not in stage_names:
            checks.append((f"stages[{i}].teacher", Path(teacher)))
    for key, p in checks:
        if p is not None and not p.exists() and not (base_dir and (base_dir / p).exists()):
            raise PresetError(f"{source}: {key}: {p} does not exist")
