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

from engine import checkpoint
from engine.data.resources import data_workers
from engine.detect import data as ydata
from engine.detect.evaluate import Evaluator, val_subset
from engine.detect.model import arch_of
from engine.errors import DataError, PresetError
from engine.task import ULTRALYTICS, Current, TaskKind


class UltralyticsTask:
    kind: TaskKind = ULTRALYTICS

    def __init__(self, run: Any):
        from engine.detect import ultra

        ultra.load()
        self.run = run  # the orchestrator (engine/pipeline.py)
        self._data: ydata.YoloData | None = None
        self._evaluators: dict[Any, Evaluator] = {}

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
            if not self.run.dist.is_main:
                raise DataError("generated detection data must be written by rank 0 first")
            write_dataset(root, train=spec.train_size, val=spec.val_size, classes=spec.num_classes, seed=spec.seed,
                          overwrite=root.exists())
        return root / "data.yaml"

    def evaluator(self, images: list[str] | None = None) -> Evaluator:
        """Ultralytics' validator on the val split (or the listed images), its dataloader built once."""
        key = tuple(images) if images else None
        if key not in self._evaluators:
            run = self.run
            bs = run.spec.training.batch_size
            work = run.writer.path / "ultralytics" / "val"
            self._evaluators[key] = Evaluator(self.data(), imgsz=self.imgsz, batch=max(1, bs), device=run.device,
                                              work_dir=work, images=images, workers=data_workers(run.spec.data.workers))
        return self._evaluators[key]

    def fresh(self, spec_model: Any) -> Current:
        run = self.run
        d = self.data()
        if spec_model.checkpoint is not None:
            # an Ultralytics best.pt is a pickle: loaded only when the run was started with trust
            loaded = checkpoint.load(spec_model.checkpoint, trust=run.trust)
            if loaded.arch.get("task") != "detect":
                raise PresetError(f"{spec_model.checkpoint}: is not a detection checkpoint (task detect needs one)")
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

    def calibrate(self, model: nn.Module) -> nn.Module:
        """A cut detector is measured with the BatchNorm statistics it had."""
        return model

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

    def runners(self) -> dict[str, Callable[[Any, dict | None], dict]]:
        return {"train": self.train_stage, "finetune": self.train_stage, "sparse": self.sparse_stage}

    def train(self, stage: Any, resume: dict | None, cur: Current, callbacks: list[Any] = (), *,
              loss_fn: Any = None, selection: Any = None, penalty: Any = None) -> dict:
        """One training stage inside Ultralytics' trainer; `penalty` is the sparsity penalty
        (engine/slim/sparse.py) applied after unscaling, before the optimizer step."""
        from engine.detect.trainer import Session, trainer_args
        from engine.detect.trainer import train as ultralytics_train
        from engine.train import NullReporter

        run = self.run
        cfg = run.spec.training_for(stage)
        model = copy.deepcopy(cur.model)  # Ultralytics trains in place; the run's current model stays as it was
        session = Session(stage=stage.name, writer=run.writer, arch=cur.arch, plan=cur.plan,
                          meta={"spec": run.spec.model_dump(mode="json")}, stop=run.stop,
                          reporter=run.reporter or NullReporter(), log_every=cfg.log_every, penalty=penalty,
                          resume=resume)
        args = trainer_args(cfg, data=self.data(), imgsz=self.imgsz, device=run.device,
                            save_dir=run.writer.path / "ultralytics" / stage.name, stage=stage.name,
                            augment=run.spec.data.augment, workers=data_workers(run.spec.data.workers),
                            model_name=cur.arch["name"].split(":", 1)[-1])  # a label in Ultralytics' args.yaml
        if cfg.epochs == 0:
            out = run.finish(stage, cur)
            return self.measure(cur, out) | {"epochs": 0}
        best = ultralytics_train(model, self.data(), args, session)
        best_path = run.writer.weights / "best.pt"
        loaded = checkpoint.load(best_path, trust=run.trust)
        cur = Current(loaded.model, loaded.arch, loaded.plan)
        out = run.finish(stage, cur, src=best_path)  # last.pt goes once the output is written (the run's commit)
        return self.measure(cur, out, best) | {"epochs": cfg.epochs, "best_epoch": best.get("epoch")}

    def train_stage(self, stage: Any, resume: dict | None) -> dict:
        return self.train(stage, resume, self.run.start(stage))

    def sparse_stage(self, stage: Any, resume: dict | None) -> dict:
        from engine.slim.gamma import gamma_stats
        from engine.slim.sparse import SparsePenalty

        cur = self.run.start(stage)
        gamma_stats(cur.model)
        penalty = SparsePenalty(s=stage.s, decay=stage.decay, exclude=stage.exclude)
        return self.train(stage, resume, cur, penalty=penalty) | {"s": stage.s}

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
        from engine.detect.deploy import export_onnx

        run = self.run
        return export_onnx(cur.model, out, data=self.data(), imgsz=shape[1], batch=batch, opset=opset,
                           arch=cur.arch, plan=cur.plan, meta=meta, work_dir=run.writer.path / "ultralytics" / out.stem,
                           log=run.writer.log, progress=progress)

    def export_runtime(self, cur: Current, fmt: str, *, stem: str, imgsz: int, samples: int,
                       progress: Callable[[float, str], None]) -> dict[str, Any]:
        """`cur` written by Ultralytics' exporter for another runtime (OpenVINO, ncnn, LiteRT) as
        `<stem><suffix>` in the run directory, its mAP through that runtime (engine/detect/runtimes.py)."""
        from engine.detect import runtimes

        run = self.run
        out = run.writer.path / runtimes.artifact_name(stem, fmt)
        run.writer.log(f"{stem}: writing {out.name} ({fmt}) with Ultralytics' exporter")
        progress(0.0, f"exporting {out.name}")
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
        score = onnx_scorer(self.data(), imgsz, self.run.writer.path / "ultralytics" / "quantize")
        return QuantizeData(batches, score, compare=detection_sqnr, probe=probe_images(imgsz), notes=notes)
