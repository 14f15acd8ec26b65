"""The training loop: one function you can read top to bottom (`Trainer.fit`).

Mixed precision follows the usual recipe: autocast for the forward, GradScaler for fp16,
gradients unscaled before callbacks and clipping, and accumulation counted in micro-batches
so an optimizer step always sees one effective batch. Callbacks (sparse-training penalty,
distillation) plug in at fixed points; see `Callback`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import checkpoint, distributed, threads
from engine.config import TrainingSpec
from engine.errors import Cancelled, PresetError, RunError
from engine.runs import RunWriter
from engine.select import Selection

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


class Callback(Protocol):
    """Every method is optional; the trainer calls those a callback has."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def parameters(self) -> list[nn.Parameter]: ...  # extra trainable parameters (regressors)
    def before_backward(self, trainer: Trainer, loss: torch.Tensor) -> None: ...  # every micro-batch
    def after_backward(self, trainer: Trainer) -> None: ...  # grads accumulated and unscaled
    def after_step(self, trainer: Trainer) -> None: ...
    def before_eval(self, trainer: Trainer, epoch: int) -> None: ...  # epoch end, before the val pass
    def on_epoch_end(self, trainer: Trainer, epoch: int) -> dict[str, float]: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...  # also after failure or cancel


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    return F.cross_entropy(logits, y), {}


class StopFlag:
    """Set from a signal handler; the loop checks it at every optimizer step."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def request(self, name: str = "stop") -> None:
        self.requested = True
        self.signal_name = name


class Reporter(Protocol):
    def stage_progress(self, stage: str, epoch: int, epochs: int, batch: int, batches: int, loss: float) -> None: ...
    def epoch_done(self, stage: str, metrics: dict[str, Any]) -> None: ...


class NullReporter:
    def stage_progress(self, *args: Any) -> None:
        pass

    def epoch_done(self, *args: Any) -> None:
        pass


# ---------------------------------------------------------------- set-up helpers


def resolve_device(name: str, info: distributed.DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PresetError(f"training.device: {name} asked for, but CUDA is not available here; use cpu or auto")
        index, count = torch.device(name).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise PresetError(f"training.device: {name} asked for, but this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
        if info is not None and info.enabled:  # one GPU per process: cuda:LOCAL_RANK
            local = int(os.environ.get("LOCAL_WORLD_SIZE", info.local_rank + 1))
            if max(local, info.local_rank + 1) > count:
                raise PresetError(f"torchrun started {max(local, info.local_rank + 1)} processes on this machine "
                                  f"(--nproc_per_node) but it has {count} CUDA device(s): each process trains on "
                                  f"its own GPU; use --nproc_per_node {count} (or fewer)")
            if name == "cuda":
                name = f"cuda:{info.local_rank}"
    if name == "mps" and not torch.backends.mps.is_available():
        raise PresetError("training.device: mps asked for, but Apple's MPS is not available here; use cpu or auto")
    return torch.device(name)


def amp_dtype(cfg: TrainingSpec, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "none":
        return None
    if cfg.amp == "fp16":
        if device.type != "cuda":
            raise PresetError("training.amp: fp16 autocast needs CUDA; use bf16 on the CPU (or none)")
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainingSpec) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, cfg: TrainingSpec) -> float:
    """Multiplier of the base lr at optimizer step `step` (warmup, then the schedule)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if cfg.schedule == "step":
        return cfg.step_gamma ** sum(t >= m for m in cfg.step_milestones)
    return 1.0


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainingSpec, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, cfg))


def apply_settings(opt: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, cfg: TrainingSpec) -> None:
    """The spec's lr, momentum and weight decay over those of a loaded optimizer state.

    `load_state_dict` brings back the hyperparameters saved in last.pt, so a resume's
    `--set training.lr=...` would otherwise be silently ignored. With unchanged settings the
    values are the saved ones: the lr is the scheduler's own formula at the saved step."""
    for group, factor in zip(opt.param_groups, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * factor(scheduler.last_epoch)
        group["weight_decay"] = cfg.weight_decay
        if "momentum" in group and cfg.optimizer == "sgd":
            group["momentum"], group["nesterov"] = cfg.momentum, cfg.momentum > 0
    scheduler.base_lrs = [cfg.lr] * len(opt.param_groups)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "numpy": np.random.get_state()[1].tolist()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], np.array(state["numpy"], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def memory_figures(device: torch.device) -> dict[str, float]:
    mib = 1024 * 1024
    if device.type == "cuda":
        return {
            "mem_allocated": torch.cuda.memory_allocated(device) / mib,
            "mem_reserved": torch.cuda.memory_reserved(device) / mib,
            "mem_peak": torch.cuda.max_memory_allocated(device) / mib,
        }
    import psutil

    return {"rss": psutil.Process().memory_info().rss / mib}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp: torch.dtype | None = None) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (a fraction) over a loader."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
    model.train(was_training)
    if seen == 0:
        return {"val_loss": float("nan"), "accuracy": 0.0}
    return {"val_loss": loss_sum.item() / seen, "accuracy": correct.item() / seen}


# ---------------------------------------------------------------- the loop


@dataclass
class FitResult:
    best: dict[str, Any] = field(default_factory=dict)  # metrics of the selected epoch (see Selection)
    last: dict[str, Any] = field(default_factory=dict)
    peak: dict[str, Any] = field(default_factory=dict)  # where early stopping counts from
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] | None = None


class Trainer:
    """Trains one model for one stage; writes last.pt every epoch and best.pt for the selected epoch."""

    def __init__(
        self,
        model: nn.Module,
        data: Any,  # engine.data.DataBundle
        cfg: TrainingSpec,
        *,
        stage: str,
        writer: RunWriter,
        arch: dict,
        plan: dict | None = None,
        meta: dict | None = None,
        loss_fn: LossFn | None = None,
        callbacks: Iterable[Any] = (),
        device: torch.device | None = None,
        dist_info: distributed.DistInfo | None = None,
        stop: StopFlag | None = None,
        reporter: Reporter | None = None,
        selection: Selection | None = None,
        headline: bool = True,
    ):
        self.selection = selection or Selection()
        # False for a control stage: its epochs never become status.json's best_accuracy, the run's headline
        self.headline = headline
        self.dist = dist_info or distributed.DistInfo()
        self.device = device or resolve_device(cfg.device, self.dist)
        self.cfg = cfg
        self.stage = stage
        self.writer = writer
        self.arch, self.plan, self.meta = arch, plan, dict(meta or {})
        self.data = data
        self.model = model.to(self.device)
        self.loss_fn = loss_fn or cross_entropy
        self.callbacks = list(callbacks)
        self.stop = stop or StopFlag()
        self.reporter = reporter or NullReporter()
        self.amp_dtype = amp_dtype(cfg, self.device)
        self.epochs = cfg.epochs
        self.epoch_metrics: dict[str, Any] = {}
        self.epoch = 0
        self.step = 0
        self.resume_point: tuple[int, int] | None = None  # (epoch, batch) of the last.pt this stage saved

    def _call(self, hook: str, *args: Any) -> list[Any]:
        return [getattr(cb, hook)(*args) for cb in self.callbacks if hasattr(cb, hook)]

    def fit(self, resume: dict | None = None) -> FitResult:
        cfg, device, model = self.cfg, self.device, self.model
        train_loader, val_loader = self.data.train, self.data.val
        accumulate = cfg.accumulate
        steps_per_epoch = max(1, math.ceil(len(train_loader) / accumulate))

        seed_everything(cfg.seed + self.dist.rank)
        self.threads, _ = threads.apply(cfg.threads)
        self._call("on_fit_start", self)
        if resume is not None:
            # callbacks with trainable state (hint regressors) must match the optimizer state
            for cb, state in zip(self.callbacks, resume.get("callbacks", []), strict=False):
                if state is not None and hasattr(cb, "load_state_dict"):
                    cb.load_state_dict(state)
        extra_params = [p for ps in self._call("parameters") for p in ps]
        if cfg.sync_bn and self.dist.enabled and device.type != "cuda":
            self.writer.log("warning: training.sync_bn needs CUDA; each rank keeps its own BatchNorm statistics")
        ddp_model = distributed.wrap(model, self.dist, device, cfg.sync_bn)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad] + extra_params, cfg)
        scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        autocast = torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

        result = FitResult()
        start_epoch, skip_batches, loss_sum, loss_n = 0, 0, 0.0, 0
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if resume["scaler"]:  # empty when saved by a disabled scaler (amp changed on the resume)
                scaler.load_state_dict(resume["scaler"])
            apply_settings(optimizer, scheduler, cfg)
            set_rng_state(resume["rng"])
            pos = resume["position"]
            start_epoch, skip_batches, self.step = pos["epoch"], pos["batch"], pos["step"]
            loss_sum, loss_n = pos.get("loss_sum", 0.0), pos.get("loss_n", 0)
            result.best = resume.get("best", {})
            result.peak = resume.get("peak", {})
            self.resume_point = (pos["epoch"], pos["batch"])

        def save_last(epoch: int, batch: int) -> None:
            position = {"stage": self.stage, "epoch": epoch, "batch": batch, "step": self.step,
                        "loss_sum": loss_sum, "loss_n": loss_n}
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_state(), "position": position, "best": result.best,
                     "peak": result.peak,
                     "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks]}
            if self.dist.is_main:
                meta = {**self.meta, "stage": self.stage, "epoch": epoch, "metrics": result.last}
                checkpoint.save(self.writer.weights / "last.pt", model, self.arch, plan=self.plan, meta=meta, resume=state)
            self.resume_point = (epoch, batch)

        try:
            for epoch in range(start_epoch, cfg.epochs):
                if self.selection.should_stop(epoch, result.peak):
                    self._early_stop(epoch, result)
                    break
                self.epoch = epoch
                # resuming inside an epoch: the loader starts at the saved batch, without loading
                # the ones before, and replays exactly the batches an uninterrupted epoch has
                train_loader.set_epoch(epoch, start=skip_batches)
                model.train()
                optimizer.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                n_batches = len(train_loader)
                for i, (x, y) in enumerate(train_loader, start=skip_batches):
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    last_micro = (i + 1) % accumulate == 0 or i + 1 == n_batches
                    sync = contextlib.nullcontext() if last_micro or not self.dist.enabled else ddp_model.no_sync()
                    with sync:
                        with autocast:
                            logits = ddp_model(x)
                            loss, terms = self.loss_fn(logits, x, y)
                        if device.type == "cpu" or last_micro:
                            self._check_finite(loss, epoch, i)
                        self._call("before_backward", self, loss)
                        scaler.scale(loss / accumulate).backward()
                    loss_sum += loss.item() if device.type == "cpu" else 0.0
                    loss_n += 1
                    if not last_micro:
                        continue

                    scaler.unscale_(optimizer)
                    self._call("after_backward", self)
                    if cfg.clip_norm is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    self.step += 1
                    self._call("after_step", self)

                    if self.step % cfg.log_every == 0:
                        lossv = loss.item()
                        record = {"stage": self.stage, "epoch": epoch, "step": self.step, "loss": lossv,
                                  "lr": optimizer.param_groups[0]["lr"], **terms, **memory_figures(device)}
                        self.writer.metrics(record)
                        self.writer.status(progress=(epoch + (i + 1) / n_batches) / max(1, cfg.epochs))
                        self.reporter.stage_progress(self.stage, epoch, cfg.epochs, i + 1, n_batches, lossv)
                    if distributed.any_true(self.stop.requested, self.dist, device):
                        save_last(epoch, i + 1)
                        raise Cancelled(f"{self.stop.signal_name or 'stop'} at epoch {epoch + 1} step {self.step}")
                skip_batches = 0

                metrics = {"stage": self.stage, "epoch": epoch, "step": self.step,
                           "loss": loss_sum / max(1, loss_n) if device.type == "cpu" else loss.item(),
                           "lr": optimizer.param_groups[0]["lr"], "epoch_time": time.perf_counter() - t0,
                           "threads": self.threads}
                self._call("before_eval", self, epoch)
                metrics.update(evaluate(model, val_loader, device, self.amp_dtype))
                self.epoch_metrics = metrics  # what on_epoch_end callbacks may read (val accuracy)
                for extra in self._call("on_epoch_end", self, epoch):
                    metrics.update(extra or {})
                metrics.update(memory_figures(device))
                loss_sum, loss_n = 0.0, 0
                result.last = metrics
                result.peak = self.selection.peak(metrics, result.peak)
                if self.selection.improves(metrics, result.best):
                    result.best = metrics
                    if self.dist.is_main:
                        meta = {**self.meta, "stage": self.stage, "epoch": epoch, "metrics": metrics}
                        checkpoint.save(self.writer.weights / "best.pt", model, self.arch, plan=self.plan, meta=meta)
                self.writer.metrics(metrics)
                self.writer.status(progress=(epoch + 1) / max(1, cfg.epochs),
                                   **({"best_accuracy": result.best["accuracy"]} if self.headline else {}))
                self.reporter.epoch_done(self.stage, metrics)
                save_last(epoch + 1, 0)
        finally:
            self._call("on_fit_end", self)
        return result

    def _early_stop(self, completed: int, result: FitResult) -> None:
        result.stopped_early = True
        metric = self.selection.metric
        text = (f"[{self.stage}] early stop after {completed} of {self.epochs} epochs: {metric} has not improved "
                f"for {self.selection.patience} epochs (best {result.peak[metric]:.4f} at epoch {result.peak['epoch'] + 1})")
        self.writer.log(text)
        if hasattr(self.reporter, "message"):
            self.reporter.message(text)

    def _check_finite(self, loss: torch.Tensor, epoch: int, batch: int) -> None:
        if not torch.isfinite(loss).all():
            hint = " with fp16 autocast try bf16 or a lower lr;" if self.amp_dtype == torch.float16 else ""
            if self.resume_point is not None:  # saved by this stage, in this process or the one resumed
                e, b = self.resume_point
                where = f"after epoch {e}" if b == 0 else f"at epoch {e} batch {b}"
                saved = f"weights/last.pt holds the state {where}: a resume continues from there"
            else:
                saved = "no resume point of this stage was saved yet, so a resume starts the stage over"
            lower = f"{self.cfg.lr / 10:g}"
            raise RunError(
                f"stage {self.stage}: loss is {loss.item()} at epoch {epoch} batch {batch};{hint} lower the learning "
                f"rate (e.g. training.lr={lower}) or clip gradients (training.clip_norm=1.0). {saved}.",
                settings=[f"training.lr={lower}"],
            )
