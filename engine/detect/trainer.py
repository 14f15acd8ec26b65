"""Training a detection model with Ultralytics' own DetectionTrainer, inside a slimlab run.

Ultralytics does the data loading, augmentation, loss, optimizer, EMA and validation. The subclass
changes only what slimlab owns: the dataset comes from slimlab's checked yaml (no download), the
model is the one the pipeline carries, the sparsity penalty is added to the BatchNorm gamma
gradients after unscaling and before clipping and the optimizer step, checkpoints are slimlab's
(weights/best.pt from the EMA, weights/last.pt as the resume point), metrics lines go to
metrics.jsonl, and a stop request (SIGTERM/SIGINT) ends training at the next batch boundary with
a resumable last.pt. A resumed stage restarts the interrupted epoch from the weights, EMA and
optimizer state saved at the stop.

Under torchrun every rank runs this trainer and Ultralytics' own DDP does the rest: its distributed
sampler gives each rank its share of the batch, DDP averages the gradients in the backward pass,
and its EMA, validation and checkpoint step run on rank 0 (`save_model`). slimlab adds what keeps
the ranks identical and the run directory single-written: the penalty after the reduced gradients
are unscaled (the same on every rank), the KD adapters' gradients averaged by hand (they live
outside the DDP model), s: auto decided on rank 0 and sent to the others, a stop agreed by all
ranks at the same batch, and only rank 0 writing (see `make_trainer` for the overrides).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from engine import checkpoint, distributed
from engine.config import TrainingSpec
from engine.detect import ultra
from engine.detect.data import YoloData
from engine.detect.evaluate import slim_metrics
from engine.errors import Cancelled, PresetError
from engine.runs import RunWriter
from engine.train import StopFlag, memory_figures, rng_state, set_rng_state

OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW", "adam": "Adam"}
NO_AUGMENT = {"mosaic": 0.0, "mixup": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0,
              "translate": 0.0, "scale": 0.0, "erasing": 0.0}  # fmt: skip


def trainer_args(cfg: TrainingSpec, *, data: YoloData, imgsz: int, device: torch.device, save_dir: Path,
                 stage: str, augment: bool, workers: int, model_name: str = "model.yaml") -> dict[str, Any]:
    """Ultralytics training settings from slimlab's training section."""
    if cfg.schedule == "step":
        raise PresetError(f"stage {stage}: detection training uses a cosine or constant schedule, not step")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise PresetError("training.amp: fp16 autocast needs CUDA; use none on the CPU")
    args: dict[str, Any] = {
        "task": "detect", "mode": "train", "model": model_name, "data": str(data.yaml_path), "epochs": cfg.epochs, "batch": cfg.batch_size,
        "imgsz": imgsz, "optimizer": OPTIMIZERS[cfg.optimizer], "lr0": cfg.lr, "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay, "warmup_epochs": cfg.warmup_epochs, "cos_lr": cfg.schedule == "cosine",
        "lrf": 1.0 if cfg.schedule == "constant" else 0.01, "seed": cfg.seed, "deterministic": True,
        "device": "cpu" if device.type == "cpu" else str(device.index or 0), "workers": workers,
        "amp": {"none": False, "fp16": True, "bf16": "bf16"}[cfg.amp], "plots": False, "val": True,
        # project absolute: Ultralytics puts a relative one under its own runs/detect/ in the working directory
        "pretrained": False, "verbose": False, "project": str(save_dir.parent.resolve()), "name": save_dir.name,
        "exist_ok": True, "patience": 10_000, "save_period": -1, "cache": False,
        # short runs close mosaic for their second half, as the default (last 10 of many) does for long ones
        "close_mosaic": min(10, cfg.epochs // 2),
    }  # fmt: skip
    if not augment:
        args.update(NO_AUGMENT)
    return args


@dataclass
class Session:
    """slimlab's side of one detection training stage (what the Ultralytics subclass reports to)."""

    stage: str
    writer: RunWriter
    arch: dict
    plan: dict | None
    meta: dict
    stop: StopFlag
    reporter: Any
    log_every: int
    penalty: Any = None  # engine.slim.sparse.SparsePenalty for a sparse stage
    monitor: Any = None  # engine.detect.monitor.DetectPrunedAtTarget: the stage has a target
    controller: Any = None  # engine.slim.auto_s.AutoSController: s: auto
    distill: Any = None  # engine.detect.distill.DetectDistiller: a teacher
    select: str = "fitness"  # which epoch is best.pt: fitness (Ultralytics'), pruned (at target), last
    # re-estimates a model's BatchNorm statistics (engine/slim/bn_calibrate.py): the EMA's, before each
    # validation of a sparse stage, whose shrinking gammas leave the running averages behind
    recalibrate: Any = None
    resume: dict | None = None
    dist: Any = None  # engine.distributed.DistInfo of a torchrun run; None or world size 1: one process
    device: Any = None  # this rank's device (cuda:LOCAL_RANK under torchrun on GPUs)
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    epoch_start: float = 0.0
    train_time: float = 0.0  # the latest epoch's training batches, validation excluded

    @property
    def is_main(self) -> bool:
        """The rank that measures, decides and writes (global rank 0: nodes may share storage)."""
        return self.dist is None or self.dist.is_main

    @property
    def ddp(self) -> bool:
        return self.dist is not None and self.dist.enabled

    def share_s(self) -> None:
        """s: auto is decided on rank 0 (it measures the model); every rank's penalty takes its s."""
        if self.ddp and self.controller is not None:
            import torch.distributed as dist

            box = [self.penalty.s]
            dist.broadcast_object_list(box, src=0)
            self.penalty.s = float(box[0])

    # ------------------------------------------------------------ checkpoints

    def save_last(self, trainer: Any, epoch: int) -> None:
        """The resume point: start `epoch` from these weights, EMA, optimizer and scaler states."""
        state = {
            "ema": {k: v.detach().cpu() for k, v in trainer.ema.ema.state_dict().items()},
            "ema_updates": int(trainer.ema.updates),
            "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict(), "rng": rng_state(),
            "position": {"stage": self.stage, "epoch": epoch, "batch": 0, "step": self.step},
            "best": self.best, "best_fitness": _plain_float(trainer.best_fitness),
        }  # fmt: skip
        if self.controller is not None:
            state["auto_s"] = self.controller.state_dict()
        elif self.penalty is not None:
            state["s"] = self.penalty.s
        if self.distill is not None:
            state["distill"] = self.distill.state_dict()
        meta = {**self.meta, "stage": self.stage, "epoch": epoch, "metrics": self.last}
        checkpoint.save(self.writer.weights / "last.pt", _unwrap(trainer.model), self.arch, plan=self.plan,
                        meta=meta, resume=state)

    def save_best(self, trainer: Any, metrics: dict[str, Any]) -> None:
        meta = {**self.meta, "stage": self.stage, "epoch": trainer.epoch, "metrics": metrics}
        checkpoint.save(self.writer.weights / "best.pt", trainer.ema.ema, self.arch, plan=self.plan, meta=meta)

    def restore(self, trainer: Any) -> None:
        """Put a stopped stage's state back into a freshly set-up trainer."""
        r = self.resume
        checkpoint.load_state(_unwrap(trainer.model), r["state_dict"], source="weights/last.pt")
        trainer.ema.ema.load_state_dict(r["ema"])
        trainer.ema.updates = r["ema_updates"]
        trainer.optimizer.load_state_dict(r["optimizer"])
        trainer.scaler.load_state_dict(r["scaler"])
        set_rng_state(r["rng"])
        trainer.best_fitness = r.get("best_fitness")
        trainer.start_epoch = int(r["position"]["epoch"])
        self.step = int(r["position"]["step"])
        self.best = dict(r.get("best") or {})
        if self.controller is not None and "auto_s" in r:
            self.controller.load_state_dict(r["auto_s"])
        elif self.penalty is not None and "s" in r:
            self.penalty.s = float(r["s"])
        if self.distill is not None and "distill" in r:
            self.distill.load_state_dict(r["distill"])

    # ------------------------------------------------------------ callbacks

    def view(self, trainer: Any, epoch: int) -> SimpleNamespace:
        """What slimlab's callbacks read of a trainer: the model, the EMA, the epoch and the figures."""
        return SimpleNamespace(model=_unwrap(trainer.model), ema=trainer.ema, epoch=epoch, epochs=trainer.epochs,
                               slim_metrics=slim_metrics(trainer.metrics))

    def on_train_start(self, trainer: Any) -> None:
        view = self.view(trainer, trainer.start_epoch)
        if self.penalty is not None:
            self.penalty.on_fit_start(view)
        if self.monitor is not None and self.is_main:  # it measures in save_model, on rank 0 only
            self.monitor.on_fit_start(view)
        resumed = self.resume is not None and "auto_s" in self.resume
        if self.controller is not None and not resumed and self.is_main:
            self.controller.on_fit_start(SimpleNamespace(**{**vars(view), "slim_metrics": None}))
        self.share_s()
        if self.distill is not None:
            self.distill.attach(_unwrap(trainer.model))  # after the EMA copy: the EMA keeps the plain loss
            if self.ddp:  # each rank drew its own adapters' initial weights: rank 0's for all, as DDP does
                import torch.distributed as dist

                for t in self.distill.adapters.state_dict().values():
                    dist.broadcast(t, src=0)
        self.epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any) -> None:
        self.train_time = time.perf_counter() - self.epoch_start
        # rank 0's EMA is the one validated and saved: Ultralytics' validate() sends its buffers (the
        # re-estimated BatchNorm statistics among them) to the other ranks
        if self.recalibrate is not None and trainer.ema is not None and self.is_main:
            self.recalibrate(trainer.ema.ema)

    def on_train_batch_end(self, trainer: Any) -> None:
        self.step += 1
        if self.step % self.log_every == 0 and trainer.tloss:
            losses = {k: float(v) for k, v in trainer.tloss.items()}
            loss = sum(losses.values())
            record = {"stage": self.stage, "epoch": trainer.epoch, "step": self.step, "loss": loss, **losses,
                      "lr": trainer.optimizer.param_groups[0]["lr"], **memory_figures(trainer.device)}
            self.writer.metrics(record)
            nb = max(1, len(trainer.train_loader))
            done = trainer.epoch + ((self.step - 1) % nb + 1) / nb
            self.writer.status(progress=min(1.0, done / max(1, trainer.epochs)))
            self.reporter.stage_progress(self.stage, trainer.epoch, trainer.epochs, (self.step - 1) % nb + 1, nb, loss)
        stop = self.stop.requested
        if self.ddp:  # a signal reaches one rank, or the ranks at different batches: all stop at this one
            stop = distributed.any_true(stop, self.dist, trainer.device)
        if stop:
            if self.is_main:
                self.save_last(trainer, trainer.epoch)
            raise Cancelled(f"{self.stop.signal_name or 'stop'} at epoch {trainer.epoch + 1} step {self.step}")  # 1-based, as printed

    def epoch_metrics(self, trainer: Any) -> dict[str, Any]:
        losses = {k: float(v) for k, v in (trainer.tloss or {}).items()}
        return {"stage": self.stage, "epoch": trainer.epoch, "step": self.step, "loss": sum(losses.values()),
                **losses, **slim_metrics(trainer.metrics), "lr": trainer.optimizer.param_groups[0]["lr"],
                "epoch_time": time.perf_counter() - self.epoch_start, "train_time": self.train_time}  # fmt: skip

    def on_model_save(self, trainer: Any) -> None:
        """After validation, before the next epoch: the sparse stage's figures, its s for the next
        epoch, then best.pt by the stage's rule and the resume point."""
        metrics = self.epoch_metrics(trainer)
        view = self.view(trainer, trainer.epoch)
        if self.penalty is not None:
            metrics.update(self.penalty.on_epoch_end(view, trainer.epoch))
        if self.monitor is not None:
            self.monitor.measure_trainer(view)
            metrics.update(self.monitor.figures())
        if self.controller is not None:
            self.controller.on_epoch_end(view, trainer.epoch)
        if self._better(trainer, metrics):
            self.best = metrics
            self.save_best(trainer, metrics)
        self.last = metrics
        self.save_last(trainer, trainer.epoch + 1)

    def _better(self, trainer: Any, metrics: dict[str, Any]) -> bool:
        if self.select == "last":
            return True
        if self.select == "pruned":  # ties go to the later, sparser epoch
            key = "mAP50_95_pruned_at_target"
            return not self.best or metrics[key] >= self.best.get(key, -1.0)
        return trainer.fitness is not None and trainer.best_fitness == trainer.fitness

    def on_fit_epoch_end(self, trainer: Any) -> None:
        self.share_s()  # every rank runs this callback; on_model_save (s: auto's decision) ran on rank 0
        metrics = {**self.last, **memory_figures(trainer.device)}
        self.writer.metrics(metrics)
        self.writer.status(progress=(trainer.epoch + 1) / max(1, trainer.epochs),
                           best_mAP50_95=self.best.get("mAP50_95"))
        self.reporter.epoch_done(self.stage, metrics)


def _average_grads(params: list[nn.Parameter], world_size: int) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world_size


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _plain_float(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def make_trainer(model: nn.Module, data: YoloData, args: dict[str, Any], session: Session) -> Any:
    """An Ultralytics DetectionTrainer subclass instance wired to `session`."""
    ultra.load()
    from ultralytics.models.yolo.detect import DetectionTrainer

    class SlimDetectionTrainer(DetectionTrainer):
        def get_dataset(self) -> dict:
            return data.ultralytics_dict()  # checked by slimlab; Ultralytics' check would download

        def _setup_ddp(self) -> None:
            """Under slimlab's torchrun the process group exists already (engine.distributed.init, one init
            for the run: the run directory's name was agreed through it); Ultralytics' own would init it
            a second time and index its device list by LOCAL_RANK. Only its device step is kept."""
            self.device = session.device or self.device
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)

        def _setup_train(self) -> None:
            if not (session.ddp and self.device.type == "cpu"):
                return super()._setup_train()
            # Ultralytics wraps the model in DDP with device_ids=[device.index], which torch refuses for
            # a CPU module (the gloo test runs): the CPU wrap goes without device ids, for this call only
            ddp = nn.parallel.DistributedDataParallel

            class CpuDDP(ddp):
                def __init__(self, module: nn.Module, device_ids: Any = None, **kwargs: Any) -> None:
                    super().__init__(module, device_ids=None, **kwargs)

            nn.parallel.DistributedDataParallel = CpuDDP
            try:
                super()._setup_train()
            finally:
                nn.parallel.DistributedDataParallel = ddp

        def optimizer_step(self) -> None:
            extra = session.distill.parameters() if session.distill is not None else []
            if session.ddp and extra:  # the KD adapters are outside the DDP model: their gradients averaged here
                _average_grads(extra, session.dist.world_size)
            penalty = session.penalty
            if penalty is None:
                return super().optimizer_step()
            scaler = self.scaler
            unscale = scaler.unscale_

            def unscale_then_penalise(optimizer: torch.optim.Optimizer) -> None:
                unscale(optimizer)  # true gradients from here on: the L1 subgradient joins them unscaled
                penalty.after_backward(self)

            scaler.unscale_ = unscale_then_penalise
            try:
                super().optimizer_step()
            finally:
                del scaler.unscale_

        def build_optimizer(self, model: nn.Module, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
            optimizer = super().build_optimizer(model, *args, **kwargs)
            extra = session.distill.parameters() if session.distill is not None else []
            if extra:  # the KD adapters train with the student, at its learning rate and decay
                decay = kwargs.get("decay", args[3] if len(args) > 3 else 0.0)
                optimizer.add_param_group({"params": extra, "weight_decay": decay, "param_group": "adapter"})
            return optimizer

        def save_model(self) -> bool:
            session.on_model_save(self)
            return False  # slimlab wrote its checkpoints; no on_model_save callbacks

        def resume_training(self, ckpt: Any) -> None:
            if session.resume is not None:
                session.restore(self)

        def final_eval(self) -> None:
            """The pipeline measures the best model itself, from weights/best.pt."""

    with _quiet():
        trainer = SlimDetectionTrainer(overrides=args)
    if session.ddp:
        # Ultralytics counts the processes from args.device ("cpu": 0, "0": 1) in the process that
        # would spawn its own DDP workers; under torchrun the ranks exist already and LOCAL_RANK is
        # set, so it spawns none and uses this count for the DDP wrap, the per-rank batch
        # (batch // world_size) and its rank-0-only steps
        trainer.world_size = session.dist.world_size
    trainer.model = model
    for event in ("on_train_start", "on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end",
                  "on_fit_epoch_end"):
        trainer.add_callback(event, getattr(session, event))
    return trainer


def _quiet() -> Any:
    from engine.detect.model import quiet

    return quiet()


def train(model: nn.Module, data: YoloData, args: dict[str, Any], session: Session) -> dict[str, Any]:
    """Run one training stage; returns the best epoch's metrics (weights/best.pt holds its EMA model)."""
    trainer = make_trainer(model, data, args, session)
    try:
        with _quiet():
            trainer.train()
    finally:
        if session.is_main:
            _tidy(Path(args["project"]) / args["name"])
    return session.best


def _tidy(save_dir: Path) -> None:
    """Ultralytics makes a weights/ folder there; slimlab's checkpoints live in the run's weights/."""
    weights = save_dir / "weights"
    if weights.is_dir() and not any(weights.iterdir()):
        weights.rmdir()
