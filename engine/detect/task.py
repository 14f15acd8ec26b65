"""The Ultralytics detection family as a task (engine/task.py): the same stages and run directory as a
classifier, with Ultralytics' trainer, loss and validator inside.

`UltralyticsTask` builds `ultralytics:<model yaml>` models (or adopts an Ultralytics or slimlab
detection checkpoint), reads YOLO-format data (engine/detect/data.py), trains training stages with
Ultralytics' DetectionTrainer (engine/detect/trainer.py), judges models by mAP50-95 through
Ultralytics' DetectionValidator (engine/detect/evaluate.py) and exports the checked ONNX file of
the detections (engine/detect/deploy.py). The shared prune, sweep, evaluate and export stages call
it like any task.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import checkpoint, distributed
from engine.data.resources import data_workers
from engine.detect import data as ydata
from engine.detect.evaluate import Evaluator, val_subset
from engine.detect.model import arch_of
from engine.errors import DataError, DistillError, PresetError
from engine.task import ULTRALYTICS, Current, TaskKind

DEFAULT_MONITOR_IMAGES = 500  # val images of the pruned-at-target mAP, unless a stage sets monitor_images
GENERATED_DATA_WAIT = 600.0  # seconds a rank waits for rank 0 to write generated data
UNMOVED_SHARE = 0.5  # pruned at the target below this share of the unpruned mAP: the cut still costs


def unmoved_warning(stage: Any, last: dict[str, float], penalty: Any) -> str | None:
    """What a sparse stage says when, at its end, the model pruned at the target is far below itself."""
    own, cut = last["acc_unpruned_subset"], last["acc_pruned_at_target"]
    if own <= 0 or cut >= UNMOVED_SHARE * own:
        return None
    share = ""
    if penalty.weights:
        from engine.slim.sparse import sparsity_figures

        f = sparsity_figures(penalty.names, penalty.weights, penalty.initial)
        share = f" (|gamma| < 1% of its initial value: {f.get('gamma_rel_lt_1e-2', f['gamma_lt_1e-2']):.1%})"
    fix = ("give it more epochs or a larger auto_s.start" if stage.s == "auto"
           else f"use s: auto, or a larger s than {stage.s:g} (x10), or more epochs")
    return (f"stage {stage.name}: pruned at the target the model scores mAP50-95 {cut:.4f} against {own:.4f} "
            f"unpruned: the penalty did not move the gammas the cut removes{share}; {fix}")


def _wait_for(path: Path, seconds: float) -> Path:
    """`path` once another rank has written it (a rank cannot join a collective here: rank 0 may be
    generating the data inside a step the others do not run)."""
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise DataError(f"{path}: rank 0 did not write the generated detection data within {seconds:.0f} s "
                            "(it writes it before its first stage; see rank 0's error, or give data.path)")
        time.sleep(0.2)
    return path


class UltralyticsTask:
    kind: TaskKind = ULTRALYTICS

    def __init__(self, run: Any):
        from engine.detect import ultra

        ultra.load()
        self.run = run  # the orchestrator (engine/pipeline.py)
        self._data: ydata.YoloData | None = None
        self._evaluators: dict[Any, Evaluator] = {}
        self._calibration: list[torch.Tensor] | None = None

    # ---------------------------------------------------------- data and models

    @property
    def imgsz(self) -> int:
        size = self.run.spec.data.image_size
        if size % 32:
            raise PresetError(f"data.image_size: detection models need a multiple of 32 (the largest stride), not {size}")
        return size

    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.imgsz, self.imgsz)

    def data(self) -> ydata.YoloData:
        if self._data is None:
            spec = self.run.spec.data
            path = self._generated(spec) if spec.dataset == "yolo_shapes" else spec.path
            self._data = ydata.load(path)
            self.run.writer.log(f"data: {self._data.describe()}")
        return self._data

    def _generated(self, spec: Any) -> Path:
        from engine.detect.synth import write_dataset

        root = self.run.writer.path / "data"
        if not (root / "data.yaml").exists():
            if not self.run.dist.is_main:  # rank 0 writes it (whole, then renamed into place): wait for it
                return _wait_for(root / "data.yaml", GENERATED_DATA_WAIT)
            write_dataset(root, train=spec.train_size, val=spec.val_size, classes=spec.num_classes, seed=spec.seed,
                          overwrite=root.exists())
        return root / "data.yaml"

    def evaluator(self, images: list[str] | None = None, rect: bool = True, workers: int | None = None) -> Evaluator:
        """Ultralytics' validator on the val split (or the listed images), its dataloader built once."""
        key = (tuple(images) if images else None, rect, workers)
        if key not in self._evaluators:
            run = self.run
            bs = run.spec.training.batch_size
            work = run.writer.path / "ultralytics" / ("val" if images is None else f"subset-{len(self._evaluators)}")
            self._evaluators[key] = Evaluator(self.data(), imgsz=self.imgsz, batch=max(1, bs), device=run.device,
                                              work_dir=work, images=images, rect=rect,
                                              workers=data_workers(run.spec.data.workers) if workers is None else workers,
                                              **self.validator_options())
        return self._evaluators[key]

    def validator_options(self) -> dict[str, Any]:
        """What a family changes in Ultralytics' validator (its IoU, a validator subclass): nothing here."""
        return {}

    def fresh(self, spec_model: Any) -> Current:
        run = self.run
        d = self.data()
        if spec_model.checkpoint is not None:
            # an Ultralytics best.pt is a pickle: loaded only when the run was started with trust
            loaded = checkpoint.load(spec_model.checkpoint, trust=run.trust)
            if loaded.arch.get("task") != "detect":
                raise PresetError(f"{spec_model.checkpoint}: is not a detection checkpoint (task detect needs one)")
            if loaded.arch.get("family") == "yolov5":
                raise PresetError(f"{spec_model.checkpoint}: is a YOLOv5-repository checkpoint ({loaded.arch['name']}), "
                                  f"not an Ultralytics one, but model.arch is {spec_model.arch}: give it as "
                                  "model.arch yolov5:<yaml> (or leave model.arch out) to slim it with the YOLOv5 family")
            if loaded.arch["num_classes"] != d.nc:
                raise PresetError(
                    f"{spec_model.checkpoint}: the model detects {loaded.arch['num_classes']} classes but "
                    f"{d.yaml_path} names {d.nc}"
                )
            return Current(loaded.model, loaded.arch, loaded.plan)
        kwargs = dict(spec_model.kwargs)
        torch.manual_seed(run.spec.training.seed)
        model = checkpoint.build_model({"name": spec_model.arch, "num_classes": d.nc, "in_channels": 3,
                                        "kwargs": {**kwargs, "names": d.names, "imgsz": self.imgsz}}, trust=run.trust)
        return Current(model, arch_of(model, spec_model.arch), None)

    # ---------------------------------------------------------- measuring

    def evaluate(self, model: nn.Module, images: int | None = None, device: torch.device | None = None) -> dict[str, float]:
        """precision, recall, mAP50, mAP50-95 (and the val losses) on the val split, or its first `images`."""
        return self.evaluator(val_subset(self.data(), images))(model)

    def calibration_batches(self) -> list[torch.Tensor]:
        """The first CALIBRATION_IMAGES training images (sorted: the same ones every time), letterboxed
        to the run's size without augmentation, as [0, 1] float batches."""
        if self._calibration is None:
            from engine.detect.monitor import CALIBRATION_IMAGES, image_batches

            n = CALIBRATION_IMAGES
            images = val_subset(self.data(), n, split="train")
            # read once, in this process: worker processes would outlive the few batches taken
            loader = self.evaluator(images, rect=False, workers=0).loader
            self._calibration = image_batches(loader, n)
        return self._calibration

    def calibrate(self, model: nn.Module) -> nn.Module:
        """A cut detector's BatchNorm statistics re-estimated on training images (engine/detect/monitor.py)."""
        from engine.detect.monitor import calibrated

        return calibrated(model, self.calibration_batches(), self.run.device)

    def measure(self, cur: Current, out: Path, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        from engine import measure

        if metrics is None or "mAP50_95" not in metrics:
            metrics = self.evaluate(cur.model)
        model = copy.deepcopy(cur.model).cpu().eval()
        shape = self.input_shape()
        figures = {k: metrics[k] for k in ("precision", "recall", "mAP50", "mAP50_95") if k in metrics}
        figures.update(params=measure.count_params(model), flops=measure.count_flops(model, shape),
                       latency_b1_ms=measure.latency_ms(model, shape, 1), imgsz=self.imgsz,
                       size=out.stat().st_size if out.exists() else None)
        return figures

    # ---------------------------------------------------------- training stages

    def trainer_args(self, stage: Any, cur: Current) -> dict[str, Any]:
        from engine.detect.trainer import trainer_args

        run = self.run
        return trainer_args(run.spec.training_for(stage), data=self.data(), imgsz=self.imgsz, device=run.device,
                            save_dir=run.writer.path / "ultralytics" / stage.name, stage=stage.name,
                            augment=run.spec.data.augment, workers=data_workers(run.spec.data.workers),
                            model_name=cur.arch["name"].split(":", 1)[-1])  # a label in Ultralytics' args.yaml

    def train(self, stage: Any, resume: dict | None, cur: Current, callbacks: list[Any] = (), *,
              loss_fn: Any = None, selection: Any = None, **parts: Any) -> dict:
        """One training stage inside Ultralytics' trainer. `parts` are the Session's sparse and KD parts
        (engine/detect/trainer.py): the penalty (applied after unscaling, before the optimizer step),
        the pruned-at-target monitor, the s: auto controller, the distiller and the selection rule."""
        from engine.detect.trainer import Session
        from engine.detect.trainer import train as ultralytics_train
        from engine.train import NullReporter

        run = self.run
        cfg = run.spec.training_for(stage)
        args = parts.pop("args", None) or self.trainer_args(stage, cur)
        run.drop_redone_metrics(stage.name, resume)  # a resumed stage redoes the steps after its resume point
        model = copy.deepcopy(cur.model)  # Ultralytics trains in place; the run's current model stays as it was
        session = Session(stage=stage.name, writer=run.writer, arch=cur.arch, plan=cur.plan,
                          meta={"spec": run.spec.model_dump(mode="json")}, stop=run.stop,
                          reporter=run.reporter or NullReporter(), log_every=cfg.log_every, resume=resume,
                          dist=run.dist, device=run.device, **parts)
        if cfg.epochs == 0:
            out = run.finish(stage, cur)
            return self.measure(cur, out) | {"epochs": 0} if run.dist.is_main else {}
        best = ultralytics_train(model, self.data(), args, session)
        distributed.barrier(run.dist)  # rank 0 wrote best.pt; every rank continues from it
        best_path = run.writer.weights / "best.pt"
        loaded = checkpoint.load(best_path, trust=run.trust)
        cur = Current(loaded.model, loaded.arch, loaded.plan)
        out = run.finish(stage, cur, src=best_path)  # last.pt goes once the output is written (the run's commit)
        if not run.dist.is_main:  # the figures are rank 0's to measure and record
            return {}
        selected = {k: best[k] for k in ("mAP50_95_pruned_at_target", "mAP50_pruned_at_target", "s") if k in best}
        return (self.measure(cur, out, best)
                | {"epochs": cfg.epochs, "best_epoch": best.get("epoch"), "selected_epoch": (best.get("epoch") or 0) + 1}
                | selected)

    def runners(self) -> dict[str, Callable[[Any, dict | None], dict]]:
        own = {"train": self.train_stage, "finetune": self.finetune_stage, "distill": self.finetune_stage,
               "sparse": self.sparse_stage}
        if self.run.dist.enabled:  # under torchrun: the stages that only measure and cut, once, on rank 0
            shared = self.run.shared_runners()
            own |= {name: self._on_main_rank(shared[name]) for name in ("evaluate", "prune", "sweep")}
        return own

    def _on_main_rank(self, work: Callable[[Any, dict | None], dict]) -> Callable[[Any, dict | None], dict]:
        """`work` run by global rank 0 alone (each validation is a full pass over the val images, the same
        on every rank: measured once) while the other ranks wait; they then take its output from disk."""

        def run_once(stage: Any, resume: dict | None) -> dict:
            run = self.run
            if run.dist.is_main:
                with run.alone():
                    figures = work(stage, resume)
            else:
                figures = {}
            distributed.barrier(run.dist)
            if not run.dist.is_main:
                self._follow(stage)
            return figures

        return run_once

    def _follow(self, stage: Any) -> None:
        """What rank 0's evaluate or prune stage set in its pipeline, set in this rank's from its files."""
        run = self.run
        out = run.writer.weights / f"{stage.name}.pt"
        if stage.type == "prune":
            run.original = run.current_output(stage) or run.writer.weights / "original.pt"
        elif stage.type != "evaluate" or run.current_output(stage) is not None:
            return  # a sweep writes no model; an evaluate stage of an earlier output keeps that one
        loaded = checkpoint.load(out, trust=run.trust)
        run.outputs[stage.name] = out
        run.current = Current(loaded.model, loaded.arch, loaded.plan)

    def monitor(self, stage: Any) -> tuple[Any, str]:
        """The pruned-at-target monitor of a train or sparse stage with a target, or (None, why not)."""
        from engine.detect.monitor import DetectPrunedAtTarget
        from engine.slim.sparse_stage import target_rule

        index = next(i for i, s in enumerate(self.run.stages) if s.name == stage.name)
        rule, described = target_rule(self.run.stages, index)
        if rule is None:
            return None, described
        total = self.data().splits["val"].images
        n = min(total, stage.monitor_images or DEFAULT_MONITOR_IMAGES)
        images = val_subset(self.data(), n) if n < total else None
        evaluator = self.evaluator(images)
        monitor = DetectPrunedAtTarget(rule, self.input_shape(), n, evaluate=evaluator, calibrate=self.calibrate,
                                       covers_val=images is None)
        return monitor, f"mAP50_95_pruned_at_target: pruned at {described}, on {n} val images"

    def train_stage(self, stage: Any, resume: dict | None) -> dict:
        cur = self.run.start(stage)
        monitor, note = self.monitor(stage)
        if monitor is not None:
            self.run.writer.log(f"{stage.name}: {note}")
        select = "last" if stage.select == "last" else "fitness"
        return self.train(stage, resume, cur, monitor=monitor, select=select)

    def sparse_stage(self, stage: Any, resume: dict | None) -> dict:
        from engine.slim.gamma import gamma_stats
        from engine.slim.gamma_ref import initial_gamma
        from engine.slim.sparse import SparsePenalty

        run = self.run
        cur = run.start(stage)
        gamma_stats(cur.model)  # fails early, with the reason, on a model without BatchNorm
        penalty = SparsePenalty(s=0.0 if stage.s == "auto" else stage.s, decay=stage.decay, exclude=stage.exclude,
                                initial=initial_gamma(cur.arch, cur.model))
        monitor, note = self.monitor(stage)
        if monitor is not None:
            run.writer.log(f"{stage.name}: {note}")
        args = self.trainer_args(stage, cur)
        controller = self._controller(stage, penalty, monitor, args) if stage.s == "auto" else None
        select = stage.select or ("best" if monitor is not None else "last")
        select = "pruned" if select == "best" and monitor is not None else ("fitness" if select == "best" else "last")
        run.writer.log(f"{stage.name}: output: " + {"pruned": "the epoch with the best mAP50_95_pruned_at_target "
                                                               "(ties: the later)",
                                                    "fitness": "the epoch with the best mAP (Ultralytics' fitness)",
                                                    "last": "the last epoch"}[select])
        figures = self.train(stage, resume, cur, penalty=penalty, monitor=monitor, controller=controller,
                             select=select, args=args, recalibrate=self.calibrate)
        if monitor is not None and monitor.last:
            warning = unmoved_warning(stage, monitor.last, penalty)
            if warning:
                run.say([f"warning: {warning}"])
        return figures | {"s": figures.get("s", penalty.s), "s_setting": stage.s}

    def _controller(self, stage: Any, penalty: Any, monitor: Any, args: dict[str, Any]) -> Any:
        from engine.detect.monitor import DetectLrBudget
        from engine.slim.auto_s import AutoSController

        run = self.run
        cfg = run.spec.training_for(stage)
        batches = max(1, -(-self.data().splits["train"].images // cfg.batch_size))
        momentum = cfg.momentum if cfg.optimizer == "sgd" else 0.9
        # Ultralytics' loss is the per-image loss times the batch, its gradients summed over the nominal
        # batch of 64 images: s may go 64 times higher than for a classifier's mean loss
        return AutoSController(penalty, monitor, stage.auto_s, DetectLrBudget(args, batches), momentum,
                               log=lambda text: run.writer.log(f"{stage.name}: {text}"), s_max=64.0)

    def finetune_stage(self, stage: Any, resume: dict | None) -> dict:
        cur = self.run.start(stage)
        distill = None
        if stage.teacher or stage.kd or stage.features:
            distill = self.distiller(stage, cur)
        return self.train(stage, resume, cur, distill=distill, select="last" if stage.select == "last" else "fitness")

    # ---------------------------------------------------------- distillation

    def teacher(self, stage: Any) -> nn.Module:
        """The stage's teacher: a detection checkpoint with the run's classes and image size."""
        run = self.run
        path = run.teacher_path(stage.teacher, stage)
        loaded = checkpoint.load(path, trust=run.trust)
        where = f"stage {stage.name}: teacher {path}"
        if loaded.arch.get("task") != "detect":
            raise DistillError(f"{where} is a classification model; a detector's teacher is a detection "
                               "checkpoint (original, a detect stage's name, or a detection best.pt)")
        nc, names = loaded.arch.get("num_classes"), self.data().nc
        if nc != names:
            raise DistillError(f"{where} detects {nc} classes but the run's data has {names}: "
                               "the teacher must have the student's classes")
        size = (loaded.arch.get("kwargs") or {}).get("imgsz")
        if size is not None and size != self.imgsz:
            raise DistillError(f"{where} was built for {size} px images but the run trains at {self.imgsz} px "
                               "(data.image_size): use a teacher of the same image size")
        return loaded.model

    def distiller(self, stage: Any, cur: Current) -> Any:
        from engine.detect.distill import DetectDistiller

        run = self.run
        if not stage.teacher:
            raise DistillError(f"stage {stage.name}: kd or feature terms need a teacher (original, a stage name, "
                               "or a checkpoint)")
        distiller = DetectDistiller(copy.deepcopy(cur.model), self.teacher(stage), kd=stage.kd,
                                    features=list(stage.features), device=run.device, imgsz=self.imgsz)
        for line in distiller.describe():
            run.writer.log(f"{stage.name}: {line}")
        return distiller

    # ---------------------------------------------------------- deployment

    def export_shape(self, input_size: str | None, where: str) -> tuple[int, int, int]:
        """3 x S x S at the run's size (or `input_size`), S a multiple of 32."""
        if not input_size:
            return self.input_shape()
        from engine.models.sizing import parse_input_size

        c, h, w = parse_input_size(input_size)
        if c != 3 or h != w or h % 32:
            raise PresetError(f"{where}: input_size {input_size}: a detection model takes 3xSxS inputs "
                              "with S a multiple of 32")
        return (c, h, w)

    def export_file(self, cur: Current, out: Path, *, shape: tuple[int, int, int], batch: int | None, opset: int,
                    meta: dict, progress: Callable[[float, str], None]) -> dict[str, Any]:
        """The checked ONNX file of the detections, its mAP measured through onnxruntime (engine/detect/deploy.py)."""
        from engine.detect import ultra
        from engine.detect.deploy import export_onnx

        run = self.run
        with ultra.one_process():  # rank 0 alone (engine/deploy/stages.py), also under torchrun
            return export_onnx(cur.model, out, data=self.data(), imgsz=shape[1], batch=batch, opset=opset,
                               arch=cur.arch, plan=cur.plan, meta=meta,
                               work_dir=run.writer.path / "ultralytics" / out.stem, log=run.writer.log, progress=progress)

    def export_runtime(self, cur: Current, fmt: str, *, stem: str, imgsz: int, samples: int,
                       progress: Callable[[float, str], None]) -> dict[str, Any]:
        """`cur` written by Ultralytics' exporter for another runtime (OpenVINO, ncnn, LiteRT) as
        `<stem><suffix>` in the run directory, its mAP through that runtime (engine/detect/runtimes.py)."""
        from engine.detect import runtimes, ultra

        run = self.run
        out = run.writer.path / runtimes.artifact_name(stem, fmt)
        run.writer.log(f"{stem}: writing {out.name} ({fmt}) with Ultralytics' exporter")
        progress(0.0, f"exporting {out.name}")
        with ultra.one_process():  # rank 0 alone, also under torchrun
            return runtimes.export(cur.model, fmt, out, data=self.data(), imgsz=imgsz, samples=samples,
                                   log=lambda line: run.writer.log(f"{stem}: {line}"))

    def refuse_formats(self, names: list[str], where: str) -> None:
        """DeployError naming each of `names` whose packages are not installed here, and the install step."""
        from engine.detect.formats import refuse_unavailable

        refuse_unavailable(names, where)

    def runner(self, path: Path, runtime: str, threads: int) -> Any:
        """What times an artifact of `export_runtime` in its own runtime (engine/deploy/latency.py)."""
        from engine.detect.runtimes import runner

        return runner(path, runtime, threads)

    def quantize_data(self, info: Any, samples: int, where: str) -> Any:
        """The first `samples` training images prepared as the exported file expects (letterboxed to its
        size, RGB, /255), its mAP through onnxruntime on the val split, and the guard's comparison of
        boxes and class scores (engine/detect/deploy.py)."""
        from engine.deploy.quantize import QuantizeData
        from engine.detect.deploy import (
            calibration_batches,
            check_detection_file,
            detection_sqnr,
            onnx_scorer,
            probe_images,
        )

        imgsz = check_detection_file(info, where, self.data().nc)
        batches, available = calibration_batches(self.data(), imgsz, samples)
        notes = []
        if available < samples:
            notes.append(f"the training split has {available} images, fewer than samples {samples}: "
                         f"calibrating on all {available}")
        score = onnx_scorer(self.data(), imgsz, self.run.writer.path / "ultralytics" / "quantize",
                            options=self.validator_options())
        return QuantizeData(batches, score, compare=detection_sqnr, probe=probe_images(imgsz), notes=notes)
