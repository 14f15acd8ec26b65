"""The pipeline's stages for `task: detect`: the same stage names and run directory, Ultralytics inside.

`DetectStages` is what `Pipeline` calls for a detection run instead of its classification stage
methods. It reuses the pipeline's bookkeeping (outputs, best.pt, original.pt, summary) and puts
Ultralytics' trainer and validator where the classification trainer and `evaluate` would be.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from engine import checkpoint
from engine.data.resources import data_workers
from engine.detect import data as ydata
from engine.detect.evaluate import Evaluator, val_subset
from engine.detect.model import arch_of
from engine.errors import DataError, PresetError

MEASURE_BATCH = 32


class DetectStages:
    def __init__(self, pipeline: Any):
        from engine.detect import ultra

        ultra.load()
        self.p = pipeline
        self._data: ydata.YoloData | None = None
        self._evaluators: dict[Any, Evaluator] = {}

    # ---------------------------------------------------------- shared pieces

    @property
    def imgsz(self) -> int:
        size = self.p.spec.data.image_size
        if size % 32:
            raise PresetError(f"data.image_size: detection models need a multiple of 32 (the largest stride), not {size}")
        return size

    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.imgsz, self.imgsz)

    def data(self) -> ydata.YoloData:
        if self._data is None:
            spec = self.p.spec.data
            if spec.dataset == "yolo_shapes":
                path = self._generated(spec)
            else:
                path = spec.path
            self._data = ydata.load(path)
            self.p.writer.log(f"data: {self._data.describe()}")
        return self._data

    def _generated(self, spec: Any) -> Path:
        from engine.detect.synth import write_dataset

        root = self.p.writer.path / "data"
        if not (root / "data.yaml").exists():
            if not self.p.dist.is_main:
                raise DataError("generated detection data must be written by rank 0 first")
            write_dataset(root, train=spec.train_size, val=spec.val_size, classes=spec.num_classes, seed=spec.seed,
                          overwrite=root.exists())
        return root / "data.yaml"

    def evaluator(self, images: list[str] | None = None) -> Evaluator:
        key = tuple(images) if images else None
        if key not in self._evaluators:
            bs = self.p.spec.training.batch_size
            work = self.p.writer.path / "ultralytics" / "val"
            self._evaluators[key] = Evaluator(self.data(), imgsz=self.imgsz, batch=max(1, bs), device=self.p.device,
                                              work_dir=work, images=images, workers=data_workers(self.p.spec.data.workers))
        return self._evaluators[key]

    def fresh(self, spec_model: Any) -> Any:
        from engine.pipeline import Current

        d = self.data()
        if spec_model.checkpoint is not None:
            # an Ultralytics best.pt is a pickle: loaded only when the run was started with trust
            loaded = checkpoint.load(spec_model.checkpoint, trust=self.p.trust)
            if loaded.arch.get("task") != "detect":
                raise PresetError(f"{spec_model.checkpoint}: is not a detection checkpoint (task detect needs one)")
            if loaded.arch["num_classes"] != d.nc:
                raise PresetError(
                    f"{spec_model.checkpoint}: the model detects {loaded.arch['num_classes']} classes but "
                    f"{d.yaml_path} names {d.nc}"
                )
            return Current(loaded.model, loaded.arch, loaded.plan)
        kwargs = dict(spec_model.kwargs)
        torch.manual_seed(self.p.spec.training.seed)
        model = checkpoint.build_model({"name": spec_model.arch, "num_classes": d.nc, "in_channels": 3,
                                        "kwargs": {**kwargs, "names": d.names, "imgsz": self.imgsz}}, trust=self.p.trust)
        return Current(model, arch_of(model, spec_model.arch), None)

    def start(self, stage: Any) -> Any:
        if stage.model is not None:
            return self.fresh(stage.model)
        if stage.start is not None:
            return self.p._load_output(stage.start)
        if self.p.current is None:
            self.p.current = self.fresh(self.p.spec.model)
        return self.p.current

    def measure(self, cur: Any, out: Path, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        from engine import measure

        if metrics is None or "mAP50_95" not in metrics:
            metrics = self.evaluator()(cur.model)
        model = copy.deepcopy(cur.model).cpu().eval()
        shape = self.input_shape()
        figures = {k: metrics[k] for k in ("precision", "recall", "mAP50", "mAP50_95") if k in metrics}
        figures.update(params=measure.count_params(model), flops=measure.count_flops(model, shape),
                       latency_b1_ms=measure.latency_ms(model, shape, 1), imgsz=self.imgsz,
                       size=out.stat().st_size if out.exists() else None)
        return figures

    # ---------------------------------------------------------- training stages

    def _train(self, stage: Any, resume: dict | None, penalty: Any = None, cur: Any = None) -> dict:
        from engine.detect.trainer import Session, train, trainer_args
        from engine.pipeline import Current
        from engine.train import NullReporter

        p = self.p
        cfg = p.spec.training_for(stage)
        cur = cur or self.start(stage)
        model = copy.deepcopy(cur.model)  # Ultralytics trains in place; the pipeline's current model stays as it was
        session = Session(stage=stage.name, writer=p.writer, arch=cur.arch, plan=cur.plan,
                          meta={"spec": p.spec.model_dump(mode="json")}, stop=p.stop, reporter=p.reporter or NullReporter(),
                          log_every=cfg.log_every, penalty=penalty, resume=resume)
        args = trainer_args(cfg, data=self.data(), imgsz=self.imgsz, device=p.device,
                            save_dir=p.writer.path / "ultralytics" / stage.name, stage=stage.name,
                            augment=p.spec.data.augment, workers=data_workers(p.spec.data.workers),
                            model_name=cur.arch["name"].split(":", 1)[-1])  # a label in Ultralytics' args.yaml
        if cfg.epochs == 0:
            out = p._finish(stage, cur)
            return self.measure(cur, out) | {"epochs": 0}
        best = train(model, self.data(), args, session)
        best_path = p.writer.weights / "best.pt"
        loaded = checkpoint.load(best_path, trust=p.trust)
        cur = Current(loaded.model, loaded.arch, loaded.plan)
        out = p._finish(stage, cur, src=best_path)  # last.pt goes once the output is written (Pipeline._commit)
        return self.measure(cur, out, best) | {"epochs": cfg.epochs, "best_epoch": best.get("epoch")}

    def _stage_train(self, stage: Any, resume: dict | None) -> dict:
        return self._train(stage, resume)

    def _stage_finetune(self, stage: Any, resume: dict | None) -> dict:
        return self._train(stage, resume)

    def _stage_sparse(self, stage: Any, resume: dict | None) -> dict:
        from engine.slim.gamma import gamma_stats
        from engine.slim.sparse import SparsePenalty

        cur = self.start(stage)
        gamma_stats(cur.model)
        penalty = SparsePenalty(s=stage.s, decay=stage.decay, exclude=stage.exclude)
        return self._train(stage, resume, penalty=penalty, cur=cur) | {"s": stage.s}

    def _stage_distill(self, stage: Any, resume: dict | None) -> dict:
        raise PresetError(f"stage {stage.name}: distillation is not available for detection models")

    # ---------------------------------------------------------- slimming stages

    def _stage_prune(self, stage: Any, resume: dict | None) -> dict:
        from engine.pipeline import _min_keep
        from engine.slim import plan as slim_plan
        from engine.slim.apply import apply_plan

        p = self.p
        cur = self.start(stage)
        p.original = p._current_output(stage) or p._save_original(cur)
        model = copy.deepcopy(cur.model).cpu().eval()
        plan = slim_plan.make_plan(
            model, input_shape=self.input_shape(), percent=stage.percent, threshold=stage.threshold,
            min_keep=_min_keep(stage.min_keep), round_to=stage.round_to, score=stage.score, ignore=stage.ignore,
            overrides={k: v.model_dump(exclude_none=True) for k, v in stage.overrides.items()},
        )
        apply_plan(model, plan)
        pruned, out = p._keep_cut(stage, cur, model, plan)
        totals = pruned.plan.get("totals", {})
        return self.measure(pruned, out) | {"percent": stage.percent, "threshold": stage.threshold,
                                            **{f"plan_{k}": v for k, v in totals.items()}}

    def _stage_sweep(self, stage: Any, resume: dict | None) -> dict:
        from engine.pipeline import _min_keep
        from engine.runs import write_json
        from engine.slim.sweep import sweep

        p = self.p
        cur = self.start(stage)
        evaluate = self.evaluator(val_subset(self.data(), stage.val_images))
        rows = sweep(copy.deepcopy(cur.model).cpu().eval(), self.input_shape(), evaluate, ratios=stage.ratios,
                     min_keep=_min_keep(stage.min_keep), round_to=stage.round_to, score=stage.score, ignore=stage.ignore)
        if p.dist.is_main:
            write_json(p.writer.path / "sweep.json", {"stage": stage.name, "metric": "mAP50_95", "rows": rows})
        return {"ratios": len(rows), "mAP50_95_at_0": rows[0].get("mAP50_95") if rows else None, "rows": rows}

    def _stage_evaluate(self, stage: Any, resume: dict | None) -> dict:
        cur = self.start(stage)
        out = self.p._current_output(stage) or self.p._finish(stage, cur)
        return self.measure(cur, out)

    # ---------------------------------------------------------- deployment

    def _stage_export(self, stage: Any, resume: dict | None) -> dict:
        from engine.deploy.stages import main_rank_only

        return main_rank_only(_export)(self.p, stage, self)


def _export(p: Any, stage: Any, impl: DetectStages) -> dict[str, Any]:
    """ONNX of the current model (and of the unpruned one, for the comparison), checked on the run's
    validation images, with its mAP through onnxruntime (engine/detect/deploy.py)."""
    from engine.deploy.stages import ORIGINAL, _progress, unpruned
    from engine.detect.deploy import export_onnx

    imgsz = impl.imgsz
    if stage.input_size:
        from engine.models.sizing import parse_input_size

        c, h, w = parse_input_size(stage.input_size)
        if c != 3 or h != w or h % 32:
            raise PresetError(f"stage {stage.name}: input_size {stage.input_size}: a detection model takes 3xSxS inputs "
                              "with S a multiple of 32")
        imgsz = h
    batch = None if stage.batch == "dynamic" else int(stage.batch)
    cur = impl.start(stage)
    todo: list[tuple[str, Any, Path]] = []
    source = unpruned(p, cur) if stage.original else None
    if source is not None:
        todo.append((source[0], checkpoint.load(source[1], trust=p.trust), p.writer.path / ORIGINAL))
    todo.append((list(p.outputs)[-1] if p.outputs else "model", cur, p.writer.path / f"{stage.name}.onnx"))
    artifacts = []
    for i, (from_stage, model, out) in enumerate(todo):
        p.writer.log(f"{stage.name}: exporting the {'unpruned' if out.name == ORIGINAL else 'current'} model "
                     f"({from_stage}) to {out.name}")
        meta = {"stage": from_stage, "run": p.writer.path.name, "spec": p.spec.model_dump(mode="json")}
        record = export_onnx(model.model, out, data=impl.data(), imgsz=imgsz, batch=batch, opset=stage.opset,
                             arch=model.arch, plan=model.plan, meta=meta,
                             work_dir=p.writer.path / "ultralytics" / stage.name, log=p.writer.log,
                             progress=_progress(p, stage, i / len(todo), 1 / len(todo)))
        record["from"] = from_stage
        artifacts.append(record)
        p.writer.log(f"{stage.name}: {out.name} reproduces PyTorch within {record['max_abs_diff']:.2g} on "
                     f"{record['checked_on']}; mAP50-95 {record['mAP50_95']:.4f} through onnxruntime")
    p.writer.status(activity=None)
    main = artifacts[-1]
    keys = ("mAP50", "mAP50_95", "precision", "recall", "params", "flops", "size", "max_abs_diff", "opset")
    return {k: main[k] for k in keys if k in main} | {"file": main["file"], "artifacts": artifacts}

