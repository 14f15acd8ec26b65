"""The classification task: slimlab's own training loop, image datasets, top-1 accuracy (engine/task.py).

`ClassifyTask` is what the orchestrator asks for models, data, training and measurements when a
preset's task is `classify`. Training stages (train, sparse, finetune, distill, scratch) are its
own runners; the shared stages (prune, sweep, evaluate, export, quantize, compress) call its
`evaluate`, `calibrate`, `measure`, `export_file` and `quantize_data`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import checkpoint, distributed
from engine.config import CONTROL_STAGES, DistillStage, FinetuneStage, SparseStage, rewinds
from engine.errors import CheckpointError, PresetError, RunError
from engine.task import CLASSIFY, Current, TaskKind
from engine.train import Trainer, evaluate


class ClassifyTask:
    kind: TaskKind = CLASSIFY

    def __init__(self, run: Any) -> None:
        self.run = run  # the orchestrator (engine/pipeline.py): spec, writer, device, outputs ...
        self._data: dict[int, Any] = {}

    # ---------------------------------------------------------- data and models

    def data_spec(self) -> Any:
        spec = self.run.spec.data
        if spec.fallback and (spec.path is None or not spec.path.exists()):
            self.run.writer.log(f"data: {spec.dataset} not found at {spec.path}; using {spec.fallback} instead")
            return spec.model_copy(update={"dataset": spec.fallback, "path": None, "fallback": None})
        return spec

    def data(self, batch_size: int | None = None) -> Any:
        """The run's DataBundle at `batch_size` (default: the run's), built once per batch size."""
        run = self.run
        batch_size = batch_size or run.spec.training.batch_size
        if batch_size not in self._data:
            from engine import data

            bundle = data.build(
                self.data_spec(), batch_size=batch_size, seed=run.spec.training.seed,
                rank=run.dist.rank, world_size=run.dist.world_size, device=run.device,
            )
            if bundle.notes and not self._data:
                run.say([f"data: {note}" for note in bundle.notes])
            self._data[batch_size] = bundle
        return self._data[batch_size]

    def _arch(self, spec_model: Any) -> dict:
        d = self.data()
        size = self._model_input_size(spec_model)
        return checkpoint.arch_dict(spec_model.arch, d.num_classes, d.in_channels, spec_model.kwargs, input_size=size)

    def _model_input_size(self, spec_model: Any) -> tuple[int, int, int] | None:
        """The preset's model.input_size; its channels must be the data's."""
        if getattr(spec_model, "input_size", None) is None:
            return None
        from engine.models.sizing import parse_input_size

        size = parse_input_size(spec_model.input_size)
        d = self.data()
        if size[0] != d.in_channels:
            raise PresetError(f"model.input_size {spec_model.input_size} has {size[0]} channels but the data has {d.in_channels}")
        return size

    def fresh(self, spec_model: Any) -> Current:
        run = self.run
        arch = self._arch(spec_model)
        if spec_model.checkpoint is not None:
            loaded = checkpoint.load(spec_model.checkpoint, arch=arch, trust=run.trust)
            self._check_classes(loaded.model, str(spec_model.checkpoint))
            return Current(loaded.model, loaded.arch, loaded.plan)
        torch.manual_seed(run.spec.training.seed)
        return Current(checkpoint.build_model(arch, trust=run.trust, source="the preset's model.arch"), arch, None)

    def _check_classes(self, model: nn.Module, source: str) -> None:
        d = self.data()
        n = _num_outputs(model, self.input_shape())
        if n != d.num_classes:
            raise CheckpointError(f"{source}: the model predicts {n} classes but dataset {self.run.spec.data.dataset} has {d.num_classes}")

    def input_shape(self) -> tuple[int, int, int]:
        size = self._model_input_size(self.run.spec.model)
        if size is not None:
            return size
        d = self.data()
        return (d.in_channels, d.image_size, d.image_size)

    # ---------------------------------------------------------- measuring

    def evaluate(self, model: nn.Module, images: int | None = None, device: torch.device | None = None) -> dict[str, float]:
        """Val loss and accuracy (`images` is a detection option: classification uses the whole split)."""
        return evaluate(model, self.data().val, device or self.run.device)

    def calibrate(self, model: nn.Module) -> nn.Module:
        """BatchNorm statistics of a cut model re-estimated on training images (engine/slim/bn_calibrate.py)."""
        from engine.slim.bn_calibrate import calibration_samples, first_batches, recalibrate

        model.to(self.run.device)
        train = self.data().train
        recalibrate(model, first_batches(train, calibration_samples(train)), self.run.device, dist_info=self.run.dist)
        return model

    def measure(self, cur: Current, out: Path | None, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        from engine import measure

        run, model = self.run, cur.model
        accuracy = (metrics or {}).get("accuracy")
        if accuracy is None:
            accuracy = self.evaluate(model)["accuracy"]
        prof = measure.profile(copy.deepcopy(model).cpu().eval(), self.input_shape(), torch.device("cpu"))
        figures = {"accuracy": accuracy, **prof, "size": out.stat().st_size if out is not None and out.exists() else None}
        test = getattr(self.data(), "test", None)
        if test is not None:  # held out of every choice: reported, never used to select
            figures["test_accuracy"] = evaluate(model, test, run.device)["accuracy"]
        if run.device.type == "cuda":
            figures["latency_cuda_b32_ms"] = measure.latency_ms(model, self.input_shape(), 32, device=run.device)
        return figures

    # ---------------------------------------------------------- training stages

    def runners(self) -> dict[str, Callable[[Any, dict | None], dict]]:
        return {"train": self.train_stage, "sparse": self.sparse_stage, "finetune": self.finetune_stage,
                "distill": self.distill_stage, "scratch": self.scratch_stage,
                "uniform": self.uniform_stage}

    def train(self, stage: Any, resume: dict | None, cur: Current, callbacks: list[Any] = (), *,
              loss_fn: Any = None, selection: Any = None) -> dict:
        run = self.run
        cfg = run.spec.training_for(stage)
        if resume is not None:
            # into the same module object: a distiller's hooks are already on it
            checkpoint.load_state(cur.model, resume["state_dict"], source=str(run.writer.weights / "last.pt"))
        run.drop_redone_metrics(stage.name, resume)
        model = cur.model.to(run.device).train()
        trainer = Trainer(
            model, self.data(cfg.batch_size), cfg, stage=stage.name, writer=run.writer,
            arch=cur.arch, plan=cur.plan, meta={"spec": run.spec.model_dump(mode="json")},
            loss_fn=loss_fn, callbacks=list(callbacks), device=run.device, dist_info=run.dist,
            stop=run.stop, reporter=run.reporter, selection=selection, headline=stage.type not in CONTROL_STAGES,
        )
        try:
            result = trainer.fit(resume=resume)
        except RunError as e:  # the suggested --set must reach this stage's own setting
            e.settings = [run.stage_setting(stage, item) for item in e.settings]
            raise
        distributed.barrier(run.dist)  # rank 0 wrote best.pt; every rank continues from it
        best_path = run.writer.weights / "best.pt"
        if result.best:
            best = checkpoint.load(best_path, trust=run.trust)
            cur = Current(best.model, best.arch, best.plan)
            out = run.finish(stage, cur, src=best_path)
        else:  # zero epochs: the model passes through unchanged
            out = run.finish(stage, cur)
        selected = {k: result.best[k] for k in ("acc_pruned_at_target", "s") if k in result.best}
        if result.best:
            selected["selected_epoch"] = result.best["epoch"] + 1
        return (self.measure(cur, out, {"accuracy": result.best.get("accuracy")})
                | {"epochs": (result.last["epoch"] + 1) if result.last else 0, **selected})

    def _stage_parts(self, stage: Any, cur: Current) -> Any:
        """Penalty, pruned-at-target monitor, s controller and epoch selection (engine/slim/sparse_stage.py)."""
        from engine.slim.sparse_stage import build_parts

        run = self.run
        cfg = run.spec.training_for(stage)
        steps = max(1, -(-len(self.data(cfg.batch_size).train) // cfg.accumulate))
        parts = build_parts(stage, run.stages, cur.model, cur.arch, self.input_shape(), cfg, steps,
                            log=lambda text: run.writer.log(f"{stage.name}: {text}"))
        for note in parts.notes:
            run.writer.log(f"{stage.name}: {note}")
        return parts

    def train_stage(self, stage: Any, resume: dict | None) -> dict:
        cur = self.run.start(stage)
        parts = self._stage_parts(stage, cur)
        return self.train(stage, resume, cur, parts.callbacks, selection=parts.selection)

    def sparse_stage(self, stage: SparseStage, resume: dict | None) -> dict:
        from engine.slim.gamma import gamma_stats

        cur = self.run.start(stage)
        gamma_stats(cur.model)  # fails early, with the reason, on a model without BatchNorm
        parts = self._stage_parts(stage, cur)
        figures = self.train(stage, resume, cur, parts.callbacks, selection=parts.selection)
        return figures | {"s": figures.get("s", stage.s), "s_setting": stage.s}

    def finetune_stage(self, stage: FinetuneStage, resume: dict | None) -> dict:
        run = self.run
        cur = run.start(stage)
        distiller = self._distiller(stage, cur) if (stage.teacher or stage.kd or stage.features) else None
        callbacks = [distiller] if distiller else []
        cfg = run.spec.training_for(stage)
        rewound = rewinds(stage)
        if rewound:
            run.writer.log(f"{stage.name}: rewind: the original schedule over {cfg.epochs} epochs: lr {cfg.lr:g}, "
                           f"{cfg.schedule}, warm-up {cfg.warmup_epochs:g} epochs")
        figures = self.train(stage, resume, cur, callbacks, loss_fn=distiller)
        return figures | {"rewind": rewound, "lr": cfg.lr}

    def distill_stage(self, stage: DistillStage, resume: dict | None) -> dict:
        cur = self.run.start(stage)
        distiller = self._distiller(stage, cur)
        return self.train(stage, resume, cur, [distiller], loss_fn=distiller)

    def scratch_stage(self, stage: Any, resume: dict | None) -> dict:
        """The pruned architecture from random initialisation (engine/slim/scratch.py); a control:
        the current model and weights/best.pt stay those of the stage before."""
        return self._control(stage, resume)

    def uniform_stage(self, stage: Any, resume: dict | None) -> dict:
        """The unpruned architecture at one width multiplier with about the pruned model's FLOPs, from
        random initialisation (engine/slim/scratch.py); a control, like scratch."""
        return self._control(stage, resume)

    def _control(self, stage: Any, resume: dict | None) -> dict:
        from engine import measure
        from engine.slim.scratch import check_pruned, control_epochs, scratch_model, uniform_plan
        from engine.slim.sparse_stage import selection_for

        run = self.run
        src = run.start(stage)
        plan = check_pruned(src.plan, stage.name)
        extra: dict[str, Any] = {}
        if stage.type == "uniform":
            plan, width = uniform_plan(src.arch, plan, self.input_shape())
            extra = {"width": round(width, 4), "pruned_flops": src.plan.get("totals", {}).get("flops_after")}
        model = scratch_model(src.arch, plan, run.spec.training.seed + 1)
        own = measure.count_flops(copy.deepcopy(model).eval(), self.input_shape())
        index = next(i for i, s in enumerate(run.stages) if s.name == stage.name)
        counts = control_epochs(run.stages, index, lambda s: run.spec.training_for(s).epochs,
                                self._stage_flops, self._teacher_flops, own)
        rule = stage.epochs_rule
        if stage.training.epochs is None:
            stage = stage.model_copy(update={"training": stage.training.model_copy(
                update={"epochs": counts[f"equal_{rule}"]})})
        what = ("the pruned architecture" if stage.type == "scratch" else
                f"the unpruned architecture at width {extra['width']:.3f} (FLOPs {own:,} vs the pruned model's "
                f"{extra['pruned_flops'] or 0:,})")
        chain = " + ".join(counts["chain"]) or "no stages"
        run.writer.log(f"{stage.name}: {what} from random initialisation, {run.spec.training_for(stage).epochs} epochs "
                       f"(rule {rule}; equal epochs of {chain}: {counts['equal_epochs']}, equal training FLOPs: "
                       f"{counts['equal_flops']})")
        cur = Current(model, src.arch, plan)
        previous = run.current
        figures = self.train(stage, resume, cur, [], selection=selection_for(stage, monitored=False))
        run.current = previous
        run.restore_best()
        return figures | {"control": stage.type, "epochs_rule": rule, "chain_epochs": counts["equal_epochs"],
                          "equal_flops_epochs": counts["equal_flops"], **extra}

    def _stage_flops(self, stage: Any) -> float:
        """Forward FLOPs of the model a finished training stage trained (its summary.json figure)."""
        return float(self._summary().get(stage.name, {}).get("flops") or 0)

    def _teacher_flops(self, stage: Any) -> float:
        teacher = getattr(stage, "teacher", None)
        if not teacher:
            return 0.0
        summary = self._summary()
        if teacher == "original":  # the model before the latest prune before this stage
            names = [s.name for s in self.run.stages]
            before = [s for s in self.run.stages[: names.index(stage.name)] if s.type == "prune"]
            if before:
                prune_at = names.index(before[-1].name)
                trained = [s.name for s in self.run.stages[:prune_at] if s.name in summary
                           and s.type not in ("scratch", "uniform")]
                return float(summary.get(trained[-1], {}).get("flops") or 0) if trained else 0.0
            return 0.0
        return float(summary.get(teacher, {}).get("flops") or 0)

    def _summary(self) -> dict[str, Any]:
        import json

        path = self.run.writer.path / "summary.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # ---------------------------------------------------------- distillation

    def _teacher(self, name: str | None, stage: Any) -> nn.Module:
        return checkpoint.load(self.run.teacher_path(name, stage), trust=self.run.trust).model

    def _distiller(self, stage: Any, cur: Current) -> Any:
        from engine.distill.distiller import Distiller

        run = self.run
        teacher = self._teacher(stage.teacher, stage).to(run.device)
        d = self.data(run.spec.training_for(stage).batch_size)
        x, _ = next(iter(d.val))
        kd = stage.kd.model_dump(exclude_none=True) if stage.kd is not None else (None if stage.features else {"T": 2.0, "w_kd": 0.25, "w_ce": 0.75})
        distiller = Distiller(
            cur.model.to(run.device), teacher, kd=kd, features=[f.model_dump() for f in stage.features],
            example_input=x[:8].to(run.device), device=run.device,
        )
        for line in distiller.describe():
            run.writer.log(f"{stage.name}: {line}")
        return distiller

    # ---------------------------------------------------------- deployment (engine/deploy/stages.py)

    def images(self) -> Any:
        """The run's data as deployment sees it: validation images for checks and accuracy, training
        images for calibration (engine/deploy/data.py)."""
        from engine.deploy.data import Images

        bundle = self.data()
        return Images(bundle, f"{self.run.spec.data.dataset} data", tuple(bundle.mean), tuple(bundle.std))

    def export_shape(self, input_size: str | None, where: str) -> tuple[int, int, int]:
        from engine.models.sizing import parse_input_size

        shape = parse_input_size(input_size) if input_size else tuple(self.input_shape())
        self.images().check_fits(shape, f"{where} (input size {'x'.join(map(str, shape))})")
        return shape

    def export_file(self, cur: Current, out: Path, *, shape: tuple[int, int, int], batch: int | None, opset: int,
                    meta: dict, progress: Callable[[float, str], None]) -> dict[str, Any]:
        from engine.deploy.artifacts import export_file

        images = self.images()
        return export_file(
            cur.model, out, input_shape=shape, images=images, batch=batch, opset=opset,
            class_names=list(images.bundle.class_names), arch=cur.arch, plan=cur.plan, meta=meta,
            log=self.run.writer.log, progress=progress,
        )

    def quantize_data(self, info: Any, samples: int, where: str) -> Any:
        """Calibration batches normalised as the ONNX file expects, and its accuracy scorer (val split)."""
        from engine.deploy.quantize import QuantizeData, accuracy_scorer

        images = self.images()
        if isinstance(info.metadata.get("mean"), list) and isinstance(info.metadata.get("std"), list):
            images.mean, images.std = tuple(info.metadata["mean"]), tuple(info.metadata["std"])
        images.check_fits(info.chw or images.shape, where, info.num_classes)
        return QuantizeData(images.calibration(samples), accuracy_scorer(images.val))


def _num_outputs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    was = model.training
    model.eval()
    with torch.no_grad():
        n = model(torch.zeros(1, *shape)).shape[-1]
    model.train(was)
    return int(n)
