"""Runs a RunSpec's stages in order inside one run directory.

The pipeline carries a *current model* from stage to stage (train -> sparse -> prune ->
finetune ...). Each stage leaves `weights/<stage>.pt`; `weights/best.pt` is always the latest
stage's model, `weights/last.pt` the resume point of a training stage in progress.
status.json lists the completed stages, so a resumed run skips them.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import checkpoint, distributed, threads
from engine import resume as on_disk
from engine import trust as trust_rule
from engine.atomic import atomic_file
from engine.config import (
    CONTROL_STAGES,
    TRAINING_STAGES,
    DistillStage,
    FinetuneStage,
    PruneStage,
    RunSpec,
    SparseStage,
    SweepStage,
)
from engine.errors import (
    Cancelled,
    CheckpointError,
    DistillError,
    PresetError,
    RunError,
    SlimlabError,
)
from engine.runs import RunLock, RunWriter, write_json
from engine.train import StopFlag, Trainer, evaluate, resolve_device

ROUND_STAGES = ("sparse", "prune", "finetune")


def expand_rounds(spec: RunSpec) -> list[Any]:
    """`rounds: N` repeats the sparse -> prune -> finetune block; a list percent gives one per round."""
    stages = list(spec.stages)
    idx = [i for i, s in enumerate(stages) if s.type in ROUND_STAGES]
    if spec.rounds == 1 or not idx:
        return [_with_round_percent(s, 0) for s in stages]
    lo, hi = idx[0], idx[-1] + 1
    block = stages[lo:hi]
    out = stages[:lo]
    for r in range(spec.rounds):
        for s in block:
            s2 = _with_round_percent(s, r)
            if r > 0:
                s2 = s2.model_copy(update={"name": f"{s.name}-r{r + 1}"})
            out.append(s2)
    return out + stages[hi:]


def _with_round_percent(stage: Any, r: int) -> Any:
    if isinstance(stage, PruneStage) and isinstance(stage.percent, list):
        if r >= len(stage.percent):
            raise PresetError(f"stage {stage.name}: percent lists {len(stage.percent)} values but round {r + 1} needs one")
        return stage.model_copy(update={"percent": stage.percent[r]})
    return stage


@dataclass
class Current:
    model: nn.Module
    arch: dict
    plan: dict | None


class Pipeline:
    def __init__(
        self,
        spec: RunSpec,
        run_path: Path,
        *,
        reporter: Any = None,
        stop: StopFlag | None = None,
        dist_info: distributed.DistInfo | None = None,
        trust: trust_rule.Trust | None = None,
        checked: bool = False,
    ):
        """`trust` says which `module:Class` archs may be built and whether pickles load: the
        architectures of a preset the user ran (`trust_rule.from_spec`), never those of a
        spec.yaml that this user did not write. By default nothing outside the registry."""
        self.spec = spec
        self.trust = trust or trust_rule.Trust()
        self.dist = dist_info or distributed.DistInfo()
        self.writer = RunWriter(run_path, enabled=self.dist.is_main)
        self.reporter = reporter
        self.stop = stop or StopFlag()
        self.stages = expand_rounds(spec)
        self.device = resolve_device(spec.training.device, self.dist)
        self._data: dict[int, Any] = {}
        self.current: Current | None = None
        self.outputs: dict[str, Path] = {}
        self.original: Path | None = None  # the model before the latest prune, for `teacher: original`
        self.stage_impl: Any = self
        if spec.task == "detect":  # Ultralytics YOLO: the same stages, trained and validated by Ultralytics
            from engine.detect.stages import DetectStages

            self.stage_impl = DetectStages(self)
        self._resuming: str | None = None  # the stage a resume continues (its stale metrics are dropped)
        self._stopped_stage: str | None = None  # the stage in progress when the resumed run stopped
        self.nothing_to_do = False  # set by a resume of a run whose stages are all done
        self._checked = checked  # the whole preset was checked already (engine/preflight.py)

    # ---------------------------------------------------------- the whole run

    def run(self, resume: bool = False) -> None:
        """Run (or with `resume`, continue) the stages. One process writes a run directory: the
        run's lock is taken first, and a second writer is refused (RunBusy) before it writes."""
        lock = RunLock(self.writer.path) if self.writer.enabled else None
        if lock is not None:
            lock.acquire()
        try:
            self._run(resume)
        finally:
            if lock is not None:
                lock.release()

    def _run(self, resume: bool) -> None:
        w = self.writer
        done: list[str] = []
        self._remove_partial_files()
        if resume:
            found = self._read_state()
            if found.status.get("state") == "done" and {s.name for s in self.stages} <= set(found.completed):
                w.log("resume: every stage is done already; nothing to do")
                self.nothing_to_do = True
                return  # `ended` and the rest stay as the run left them
            done = found.completed
        w.status(state="running", preset=self.spec.name, world_size=self.dist.world_size,
                 stages=[s.name for s in self.stages], completed=done, error=None, ended=None)
        if not resume:
            w.status(started=time.time())
        w.start_heartbeat()
        w.log(f"run {w.path.name}: {len(self.stages)} stages on {self.device}" + (" (resumed)" if resume else ""))
        self._apply_threads()
        try:
            if not self._checked:  # before the first stage: a mistake never costs the stages before it
                from engine import preflight

                preflight.check(self.spec, self.trust, source=str(w.path / "spec.yaml"))
            for i, stage in enumerate(self.stages):
                if stage.name in done:
                    if resume:
                        w.log(f"resume: stage {stage.name} is done; skipped")
                    continue
                if resume and self._recover(stage, done):
                    continue
                if self.current is None and self.outputs and stage.model is None and stage.start is None:
                    self.current = self._load_output(self._last_name())  # resuming after earlier stages
                # a stage resumed where it stopped keeps the progress it had reached, not 0%
                kept = resume and stage.name == self._stopped_stage
                w.status(stage=stage.name, stage_index=i, **({} if kept else {"progress": 0.0}))
                w.log(f"stage {stage.name} ({stage.type}) starts")
                t0 = time.time()
                state = self._resume_state(stage) if resume else None
                if kept and state is None:  # no usable resume point: the stage starts over
                    w.status(progress=0.0)
                self._resuming = stage.name if resume else None
                figures = getattr(self.stage_impl, f"_stage_{stage.type}")(stage, state)
                figures["seconds"] = round(time.time() - t0, 2)
                self._commit(stage, figures, done)
                if self.stop.requested:
                    raise Cancelled(f"{self.stop.signal_name or 'stop'} after stage {stage.name}")
                resume = False
            self._compare()
            w.status(state="done", ended=time.time(), progress=1.0)
        except (Cancelled, KeyboardInterrupt) as e:
            w.log(f"cancelled: {e or 'interrupt'}")
            w.status(state="cancelled", ended=time.time(), error=str(e))
            raise
        except BaseException as e:
            lost = distributed.lost_peer(e, self.dist)
            reason = lost or failure_reason(e, w.path)
            try:
                w.log(f"failed: {reason}")
            except OSError:  # a full disk: the status below still says why
                pass
            w.status(state="failed", ended=time.time(), error=reason)
            if lost:  # no backend traceback on any rank: one line, in status.json too
                if not self.dist.is_main:
                    self._record_for_lost_main(reason)
                raise RunError(reason) from None
            raise
        finally:
            w.stop_heartbeat()

    # ---------------------------------------------------------- completion and resume

    def _commit(self, stage: Any, figures: dict[str, Any], done: list[str]) -> None:
        """Everything after a stage's work: last.pt goes, summary.json and status.json record it.

        The stage's output (weights/<stage>.pt, written by `_finish`) comes first, so a kill in
        between leaves an output that a resume finds (`_recover`): the stage is not redone."""
        w, name = self.writer, stage.name
        last = w.weights / "last.pt"
        if self.dist.is_main and last.exists() and self._last_stage(last) == name:
            last.unlink()
            w.log(f"stage {name}: removed weights/last.pt, its resume point (the stage is complete)")
        w.summary(name, figures)
        done.append(name)
        w.status(completed=done, outputs={k: str(v) for k, v in self.outputs.items()},
                 original=str(self.original) if self.original else None)
        w.log(f"stage {name} done: " + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()))

    def _recover(self, stage: Any, done: list[str]) -> bool:
        """A stage that finished before the stop but was not marked complete: mark it, don't redo it.

        Its summary.json entry, or else its output weights/<stage>.pt (written only when its work
        is done), says it finished; with no summary entry its figures are measured again."""
        w = self.writer
        figures = on_disk.summary_entry(w.path, stage.name)
        out = w.weights / f"{stage.name}.pt"
        if figures is None and not out.exists():
            return False
        if stage.type == "prune":  # what the stage set when it ran: the model it pruned
            self.original = self._current_output(stage) or w.weights / "original.pt"
        if out.exists():
            self.outputs[stage.name] = out
            self.current = None  # the next stage starts from the outputs on disk
            best = self._last_output() if stage.type in CONTROL_STAGES else out
            if best is not None and self.dist.is_main:  # _finish may have stopped before its copy
                _atomic_copy(best, w.weights / "best.pt")
        if figures is None:
            loaded = checkpoint.load(out, trust=self.trust)
            figures = self.stage_impl.measure(Current(loaded.model, loaded.arch, loaded.plan), out)
            figures["note"] = "figures measured again from the output after a stop"
            w.log(f"resume: stage {stage.name} had written weights/{out.name} but not its figures when the run "
                  "stopped; the stage is complete and not redone, its figures are measured again from the output")
        else:
            w.log(f"resume: stage {stage.name} had finished (summary.json holds its figures) but was not marked "
                  "complete when the run stopped; marked complete now, not redone")
        self._commit(stage, figures, done)
        return True

    def _record_for_lost_main(self, reason: str) -> None:
        """A rank that outlived rank 0 writes the failed status rank 0 could not: only when run.lock
        is free, which means rank 0 is gone (the kernel released its lock)."""
        lock = RunLock(self.writer.path)
        try:
            lock.acquire()
        except (SlimlabError, OSError):
            return  # rank 0 is alive and writes its own status
        try:
            RunWriter(self.writer.path).status(state="failed", ended=time.time(), error=reason)
        except OSError:
            pass
        finally:
            lock.release()

    def _read_state(self) -> on_disk.Found:
        """status.json's bookkeeping; when it is missing or corrupt, say so and rebuild it from
        the stage records on disk."""
        found = on_disk.read_status(self.writer.path)
        self._stopped_stage = found.status.get("stage") if isinstance(found.status.get("stage"), str) else None
        if found.note:
            self.writer.log(f"resume: {found.note}; the completed stages are read from their outputs instead")
            found.completed = []
        else:
            self.outputs = found.outputs
            self.original = found.original
        return found

    def _remove_partial_files(self) -> None:
        if not self.dist.is_main:
            return
        partial = on_disk.partial_files(self.writer.path)
        for p in partial:
            p.unlink(missing_ok=True)
        if partial:
            names = ", ".join(str(p.relative_to(self.writer.path)) for p in partial)
            self.writer.log(f"removed {len(partial)} partial file{'s' if len(partial) > 1 else ''} left by an "
                            f"interrupted write: {names}")

    @staticmethod
    def _last_stage(last: Path) -> str | None:
        try:
            pos = on_disk.last_position(checkpoint.read_raw(last))
        except CheckpointError:
            return None
        return pos["stage"] if pos else None

    def _compare(self) -> None:
        """summary.json's `comparison`: every stage's accuracy, params and FLOPs side by side."""
        path = self.writer.path / "summary.json"
        if not self.dist.is_main or not path.exists():
            return
        summary = json.loads(path.read_text())
        metric = "mAP50_95" if self.spec.task == "detect" else "accuracy"
        keys = ("mAP50", "mAP50_95") if metric == "mAP50_95" else ("accuracy", "test_accuracy")
        rows = {name: {k: fig.get(k) for k in (*keys, "params", "flops", "latency_b1_ms")}
                for name, fig in summary.items()
                if isinstance(fig, dict) and metric in fig and "artifacts" not in fig and name != "comparison"}
        if any(isinstance(fig, dict) and fig.get("artifacts") for fig in summary.values()):
            from engine.deploy.stages import comparison_rows

            rows |= comparison_rows(self, summary)  # deployable files, timed side by side
        self.writer.summary("comparison", rows)
        shown = (lambda v: f"mAP50-95 {v:.4f}") if metric == "mAP50_95" else (lambda v: f"{v:.2%}")
        self.writer.log("comparison: " + "; ".join(f"{k} {shown(v[metric])}" for k, v in rows.items() if v.get(metric) is not None))

    def _resume_state(self, stage: Any) -> dict | None:
        """last.pt when it is the resume point of `stage` (read once, used by the trainer); the
        decision goes to the log."""
        last = self.writer.weights / "last.pt"
        log = self.writer.log
        if not last.exists():
            if stage.name == self._stopped_stage and stage.type in TRAINING_STAGES:
                log(f"resume: stage {stage.name} was in progress but weights/last.pt is missing (deleted?); "
                    "it starts over from its beginning")
            else:
                log(f"resume: stage {stage.name} starts from its beginning (no resume point saved for it)")
            return None
        try:
            raw = checkpoint.read_raw(last)
        except CheckpointError as e:
            log(f"resume: weights/last.pt cannot be read ({e}); stage {stage.name} starts over from its beginning")
            return None
        pos = on_disk.last_position(raw)
        if pos is None or pos["stage"] != stage.name:
            owner = pos["stage"] if pos else "no stage"
            log(f"resume: weights/last.pt belongs to {owner}, not {stage.name}; stage {stage.name} starts from its beginning")
            return None
        log(f"resume: stage {stage.name} continues from weights/last.pt (epoch {pos.get('epoch', 0) + 1}, "
            f"batch {pos.get('batch', 0)}, step {pos.get('step', 0)})")
        return raw

    # ---------------------------------------------------------- shared pieces

    def _apply_threads(self) -> None:
        """training.threads for the whole run; the value used goes to the log and status.json."""
        used, note = threads.apply(self.spec.training.threads)
        if note:
            self._say([f"warning: {note}"])
        self.writer.log(f"threads: {used} torch intra-op thread{'s' if used != 1 else ''}")
        self.writer.status(threads=used)

    def data_spec(self) -> Any:
        spec = self.spec.data
        if spec.fallback and (spec.path is None or not spec.path.exists()):
            self.writer.log(f"data: {spec.dataset} not found at {spec.path}; using {spec.fallback} instead")
            return spec.model_copy(update={"dataset": spec.fallback, "path": None, "fallback": None})
        return spec

    def data(self, batch_size: int) -> Any:
        if batch_size not in self._data:
            from engine import data

            bundle = data.build(
                self.data_spec(), batch_size=batch_size, seed=self.spec.training.seed,
                rank=self.dist.rank, world_size=self.dist.world_size, device=self.device,
            )
            if bundle.notes and not self._data:
                self._say([f"data: {note}" for note in bundle.notes])
            self._data[batch_size] = bundle
        return self._data[batch_size]

    def _arch(self, spec_model: Any) -> dict:
        d = self.data(self.spec.training.batch_size)
        size = self._model_input_size(spec_model)
        return checkpoint.arch_dict(spec_model.arch, d.num_classes, d.in_channels, spec_model.kwargs, input_size=size)

    def _model_input_size(self, spec_model: Any) -> tuple[int, int, int] | None:
        """The preset's model.input_size; its channels must be the data's."""
        if getattr(spec_model, "input_size", None) is None:
            return None
        from engine.models.sizing import parse_input_size

        size = parse_input_size(spec_model.input_size)
        d = self.data(self.spec.training.batch_size)
        if size[0] != d.in_channels:
            raise PresetError(f"model.input_size {spec_model.input_size} has {size[0]} channels but the data has {d.in_channels}")
        return size

    def _fresh(self, spec_model: Any) -> Current:
        arch = self._arch(spec_model)
        if spec_model.checkpoint is not None:
            loaded = checkpoint.load(spec_model.checkpoint, arch=arch, trust=self.trust)
            self._check_classes(loaded.model, arch, str(spec_model.checkpoint))
            return Current(loaded.model, loaded.arch, loaded.plan)
        torch.manual_seed(self.spec.training.seed)
        return Current(checkpoint.build_model(arch, trust=self.trust, source="the preset's model.arch"), arch, None)

    def _check_classes(self, model: nn.Module, arch: dict, source: str) -> None:
        d = self.data(self.spec.training.batch_size)
        n = _num_outputs(model, self._input_shape())
        if n != d.num_classes:
            raise CheckpointError(f"{source}: the model predicts {n} classes but dataset {self.spec.data.dataset} has {d.num_classes}")

    def _input_shape(self) -> tuple[int, int, int]:
        size = self._model_input_size(self.spec.model)
        if size is not None:
            return size
        d = self.data(self.spec.training.batch_size)
        return (d.in_channels, d.image_size, d.image_size)

    def _start(self, stage: Any) -> Current:
        if stage.model is not None:
            return self._fresh(stage.model)
        if stage.start is not None:
            return self._load_output(stage.start)
        if self.current is None:
            self.current = self._fresh(self.spec.model)
        return self.current

    def _load_output(self, name: str) -> Current:
        loaded = checkpoint.load(self.outputs[name], trust=self.trust)
        return Current(loaded.model, loaded.arch, loaded.plan)

    def _finish(self, stage: Any, cur: Current, src: Path | None = None) -> Path:
        """Record a stage's output model as weights/<stage>.pt and weights/best.pt.

        Written only when the stage's work is done: a resume that finds weights/<stage>.pt
        does not redo the stage (`_recover`)."""
        out = self.writer.weights / f"{stage.name}.pt"
        if self.dist.is_main:
            if src is not None:
                _atomic_copy(src, out)
            else:
                checkpoint.save(out, cur.model, cur.arch, plan=cur.plan, meta={"stage": stage.name, "spec": self.spec.model_dump(mode="json")})
            if stage.type not in CONTROL_STAGES:  # best.pt: the latest stage's model
                _atomic_copy(out, self.writer.weights / "best.pt")
        distributed.barrier(self.dist)
        self.outputs[stage.name] = out
        if stage.type not in CONTROL_STAGES:
            self.current = cur
        return out

    def measure(self, cur: Current, out: Path | None, accuracy: float | None = None) -> dict[str, Any]:
        from engine import measure

        model = cur.model
        if accuracy is None:
            accuracy = evaluate(model, self.data(self.spec.training.batch_size).val, self.device)["accuracy"]
        prof = measure.profile(copy.deepcopy(model).cpu().eval(), self._input_shape(), torch.device("cpu"))
        figures = {"accuracy": accuracy, **prof, "size": out.stat().st_size if out is not None and out.exists() else None}
        test = getattr(self.data(self.spec.training.batch_size), "test", None)
        if test is not None:  # held out of every choice: reported, never used to select
            figures["test_accuracy"] = evaluate(model, test, self.device)["accuracy"]
        if self.device.type == "cuda":
            figures["latency_cuda_b32_ms"] = measure.latency_ms(model, self._input_shape(), 32, device=self.device)
        return figures

    # ---------------------------------------------------------- training stages

    def _train(self, stage: Any, resume: dict | None, callbacks: list[Any], loss_fn: Any = None,
               cur: Current | None = None, selection: Any = None) -> dict:
        cfg = self.spec.training_for(stage)
        cur = cur or self._start(stage)
        if resume is not None:
            # into the same module object: a distiller's hooks are already on it
            checkpoint.load_state(cur.model, resume["state_dict"], source=str(self.writer.weights / "last.pt"))
        if self._resuming == stage.name:
            self._drop_redone_metrics(stage.name, resume)
        model = cur.model.to(self.device).train()
        trainer = Trainer(
            model, self.data(cfg.batch_size), cfg, stage=stage.name, writer=self.writer,
            arch=cur.arch, plan=cur.plan, meta={"spec": self.spec.model_dump(mode="json")},
            loss_fn=loss_fn, callbacks=callbacks, device=self.device, dist_info=self.dist,
            stop=self.stop, reporter=self.reporter, selection=selection,
        )
        try:
            result = trainer.fit(resume=resume)
        except RunError as e:  # the suggested --set must reach this stage's own setting
            e.settings = [self._stage_setting(stage, item) for item in e.settings]
            raise
        distributed.barrier(self.dist)  # rank 0 wrote best.pt; every rank continues from it
        best_path = self.writer.weights / "best.pt"
        if result.best:
            best = checkpoint.load(best_path, trust=self.trust)
            cur = Current(best.model, best.arch, best.plan)
            out = self._finish(stage, cur, src=best_path)
        else:  # zero epochs: the model passes through unchanged
            out = self._finish(stage, cur)
        selected = {k: result.best[k] for k in ("acc_pruned_at_target", "s") if k in result.best}
        if result.best:
            selected["selected_epoch"] = result.best["epoch"] + 1
        return (self.measure(cur, out, result.best.get("accuracy"))
                | {"epochs": (result.last["epoch"] + 1) if result.last else 0, **selected})

    def _stage_parts(self, stage: Any, cur: Current) -> Any:
        """Penalty, pruned-at-target monitor, s controller and epoch selection (engine/slim/sparse_stage.py)."""
        from engine.slim.sparse_stage import build_parts

        cfg = self.spec.training_for(stage)
        steps = max(1, -(-len(self.data(cfg.batch_size).train) // cfg.accumulate))
        parts = build_parts(stage, self.stages, cur.model, cur.arch, self._input_shape(), cfg, steps,
                            log=lambda text: self.writer.log(f"{stage.name}: {text}"))
        for note in parts.notes:
            self.writer.log(f"{stage.name}: {note}")
        return parts

    def _stage_setting(self, stage: Any, item: str) -> str:
        """`training.lr=x` as this stage's `stages.N.training.lr=x` when the stage sets its own."""
        key, _, value = item.partition("=")
        if not key.startswith("training."):
            return item
        base = stage.name.split("-r")[0] if stage.name not in [s.name for s in self.spec.stages] else stage.name
        index = next((i for i, s in enumerate(self.spec.stages) if s.name == base), None)
        own = index is not None and getattr(self.spec.stages[index].training, key.split(".", 1)[1], None) is not None
        return f"stages.{index}.{key}={value}" if own else item

    def _drop_redone_metrics(self, name: str, resume: dict | None) -> None:
        """metrics.jsonl keeps each step once: the lines after the resume point are redone."""
        pos = on_disk.last_position(resume) if resume is not None else None
        if pos is None:
            dropped = self.writer.drop_metrics(name)
        else:
            dropped = self.writer.drop_metrics(name, after_step=int(pos.get("step", 0)), from_epoch=int(pos.get("epoch", 0)))
        if dropped:
            self.writer.log(f"resume: dropped {dropped} metrics line{'s' if dropped > 1 else ''} of stage {name} "
                            "written after its resume point (those steps are redone)")

    def _stage_train(self, stage: Any, resume: dict | None) -> dict:
        cur = self._start(stage)
        parts = self._stage_parts(stage, cur)
        return self._train(stage, resume, parts.callbacks, cur=cur, selection=parts.selection)

    def _stage_sparse(self, stage: SparseStage, resume: dict | None) -> dict:
        from engine.slim.gamma import gamma_stats

        cur = self._start(stage)
        gamma_stats(cur.model)  # fails early, with the reason, on a model without BatchNorm
        parts = self._stage_parts(stage, cur)
        figures = self._train(stage, resume, parts.callbacks, cur=cur, selection=parts.selection)
        return figures | {"s": figures.get("s", stage.s), "s_setting": stage.s}

    def _stage_finetune(self, stage: FinetuneStage, resume: dict | None) -> dict:
        cur = self._start(stage)
        distiller = self._distiller(stage, cur) if (stage.teacher or stage.kd or stage.features) else None
        callbacks = [distiller] if distiller else []
        return self._train(stage, resume, callbacks, loss_fn=distiller, cur=cur)

    def _stage_distill(self, stage: DistillStage, resume: dict | None) -> dict:
        cur = self._start(stage)
        distiller = self._distiller(stage, cur)
        return self._train(stage, resume, [distiller], loss_fn=distiller, cur=cur)

    def _teacher(self, name: str | None, stage: Any) -> nn.Module:
        if name is None:
            raise DistillError(f"stage {stage.name}: kd or feature terms need a teacher (original, a stage name, or a checkpoint)")
        if name == "original":
            if self.original is None:
                raise DistillError(f"stage {stage.name}: teacher 'original' means the model before pruning, but no prune stage ran before it")
            path = self.original
        elif name in self.outputs:
            path = self.outputs[name]
        else:
            path = Path(name)
            if path.is_dir():
                path = path / "weights" / "best.pt"
            if not path.exists():
                raise DistillError(f"stage {stage.name}: teacher checkpoint {path} does not exist")
        return checkpoint.load(path, trust=self.trust).model

    def _distiller(self, stage: Any, cur: Current) -> Any:
        from engine.distill.distiller import Distiller

        teacher = self._teacher(stage.teacher, stage).to(self.device)
        d = self.data(self.spec.training_for(stage).batch_size)
        x, _ = next(iter(d.val))
        kd = stage.kd.model_dump() if stage.kd is not None else (None if stage.features else {"T": 2.0, "w_kd": 0.25, "w_ce": 0.75})
        distiller = Distiller(
            cur.model.to(self.device), teacher, kd=kd, features=[f.model_dump() for f in stage.features],
            example_input=x[:8].to(self.device), device=self.device,
        )
        for line in distiller.describe():
            self.writer.log(f"{stage.name}: {line}")
        return distiller

    # ---------------------------------------------------------- slimming stages

    def _stage_prune(self, stage: PruneStage, resume: dict | None) -> dict:
        from engine.slim.apply import apply_plan
        from engine.slim.target import plan_for_rule

        cur = self._start(stage)
        self.original = self._current_output(stage) or self._save_original(cur)
        model = copy.deepcopy(cur.model).cpu().eval()
        plan, rows = plan_for_rule(model, self._input_shape(), stage, evaluate=self._pruned_accuracy)
        if rows is not None and self.dist.is_main:
            write_json(self.writer.path / f"{stage.name}.sweep.json", {"stage": stage.name, "rows": rows})
        apply_plan(model, plan)
        self._calibrate(model)
        pruned, out = self._keep_cut(stage, cur, model, plan)
        plan_dict = pruned.plan
        totals = plan_dict.get("totals", {})
        target = plan_dict["options"].get("target")
        rule = {k: getattr(stage, k) for k in stage.rule_keys() if getattr(stage, k) is not None}
        return (self.measure(pruned, out) | rule | {"threshold": plan_dict["options"].get("global_threshold")}
                | ({"target": target} if target else {}) | {f"plan_{k}": v for k, v in totals.items()})

    def _keep_cut(self, stage: Any, cur: Current, model: nn.Module, plan: Any) -> tuple[Current, Path]:
        """A prune stage's cut model kept: plan.json, the report (warnings, totals, groups) in log.txt
        and the headless output, and weights/<stage>.pt. `plan` is the cut just applied to `model`."""
        from engine.slim import plan as slim_plan
        from engine.slim.report import prune_lines

        lines = prune_lines(stage.name, plan)  # the cut of this stage, before composing
        if cur.plan:  # a later round: one plan relative to the unpruned arch keeps reloads simple
            from engine.slim.compose import compose

            plan = compose(slim_plan.PrunePlan.from_dict(cur.plan), plan)
        plan_dict = plan.to_dict()
        if self.dist.is_main:
            write_json(self.writer.path / "plan.json", plan_dict)
        self._say(lines)
        pruned = Current(model, cur.arch, plan_dict)
        return pruned, self._finish(stage, pruned)

    def _calibrate(self, model: nn.Module) -> nn.Module:
        """BatchNorm statistics of a cut model re-estimated on training images (engine/slim/bn_calibrate.py)."""
        from engine.slim.bn_calibrate import calibration_samples, first_batches, recalibrate

        model.to(self.device)
        train = self.data(self.spec.training.batch_size).train
        recalibrate(model, first_batches(train, calibration_samples(train)), self.device, dist_info=self.dist)
        return model

    def _pruned_accuracy(self, model: nn.Module) -> dict[str, float]:
        """Val figures of a pruned copy, its BatchNorm statistics re-estimated first (sweep, max_drop)."""
        return evaluate(self._calibrate(model), self.data(self.spec.training.batch_size).val, self.device)

    def _say(self, lines: list[str]) -> None:
        """Lines for the headless output (and log.txt)."""
        for line in lines:
            self.writer.log(line)
        if self.dist.is_main and hasattr(self.reporter, "message"):
            self.reporter.message("\n".join(lines))

    def _current_output(self, stage: Any) -> Path | None:
        """The file holding the model this stage starts from, when it is the pipeline's current one."""
        if stage.model is None and stage.start is None and self.outputs:
            return self._last_output()
        return None

    def _last_name(self) -> str | None:
        """The latest stage whose output became the current model (a control stage's never does)."""
        kinds = {s.name: s.type for s in self.stages}
        names = [n for n in self.outputs if kinds.get(n) not in CONTROL_STAGES]
        return names[-1] if names else None

    def _last_output(self) -> Path | None:
        name = self._last_name()
        return self.outputs[name] if name else None

    def _save_original(self, cur: Current) -> Path:
        path = self.writer.weights / "original.pt"
        if self.dist.is_main:
            checkpoint.save(path, cur.model, cur.arch, plan=cur.plan)
        return path

    def _stage_sweep(self, stage: SweepStage, resume: dict | None) -> dict:
        from engine.slim.sweep import sweep

        cur = self._start(stage)
        rows = sweep(
            copy.deepcopy(cur.model).cpu().eval(), self._input_shape(), self._pruned_accuracy, ratios=stage.ratios,
            min_keep=_min_keep(stage.min_keep), round_to=stage.round_to, score=stage.score, ignore=stage.ignore,
        )
        if self.dist.is_main:
            write_json(self.writer.path / "sweep.json", {"stage": stage.name, "rows": rows})
            if hasattr(self.reporter, "sweep_curve"):
                self.reporter.sweep_curve(stage.name, rows)
        base = rows[0]["accuracy"] if rows else None
        return {"ratios": len(rows), "accuracy_at_0": base, "rows": rows}

    def _stage_scratch(self, stage: Any, resume: dict | None) -> dict:
        """The pruned architecture from random initialisation (engine/slim/scratch.py); a control:
        the current model and weights/best.pt stay those of the stage before."""
        from engine.slim.scratch import chain_epochs, check_pruned, scratch_model

        src = self._start(stage)
        plan = check_pruned(src.plan, stage.name)
        index = next(i for i, s in enumerate(self.stages) if s.name == stage.name)
        epochs, chain = chain_epochs(self.stages, index, lambda s: self.spec.training_for(s).epochs)
        if stage.training.epochs is None:
            stage = stage.model_copy(update={"training": stage.training.model_copy(update={"epochs": epochs})})
        self.writer.log(f"{stage.name}: the pruned architecture from random initialisation, "
                        f"{self.spec.training_for(stage).epochs} epochs ({' + '.join(chain) or 'no stages'}: {epochs})")
        cur = Current(scratch_model(src.arch, plan, self.spec.training.seed + 1), src.arch, plan)
        previous, before = self.current, self._last_output()
        figures = self._train(stage, resume, [], cur=cur, selection=self._selection(stage))
        self.current = previous
        if before is not None and self.dist.is_main:
            _atomic_copy(before, self.writer.weights / "best.pt")
        return figures | {"control": "scratch", "chain_epochs": epochs}

    def _selection(self, stage: Any) -> Any:
        from engine.slim.sparse_stage import selection_for

        return selection_for(stage, monitored=False)

    def _stage_evaluate(self, stage: Any, resume: dict | None) -> dict:
        cur = self._start(stage)
        out = self._current_output(stage) or self._finish(stage, cur)
        return self.measure(cur, out)

    # ---------------------------------------------------------- deployment stages (engine/deploy)

    def _stage_export(self, stage: Any, resume: dict | None) -> dict:
        from engine.deploy.stages import export_stage

        return export_stage(self, stage, self._start(stage), self._input_shape())

    def _stage_quantize(self, stage: Any, resume: dict | None) -> dict:
        from engine.deploy.stages import quantize_stage

        return quantize_stage(self, stage)

    def _stage_compress(self, stage: Any, resume: dict | None) -> dict:
        from engine.deploy.stages import compress_stage

        return compress_stage(self, stage, self._start(stage), resume)


def failure_reason(e: BaseException, run: Path) -> str:
    """One readable line for status.json: a failed write says which disk and why."""
    if isinstance(e, OSError) and not isinstance(e, SlimlabError):
        from engine.atomic import describe_os_error

        return describe_os_error(e, run)
    return f"{type(e).__name__}: {e}"


def _min_keep(v: float) -> int | float:
    from engine.slim.spec import min_keep_value

    return min_keep_value(v)


def _num_outputs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    was = model.training
    model.eval()
    with torch.no_grad():
        n = model(torch.zeros(1, *shape)).shape[-1]
    model.train(was)
    return int(n)


def _atomic_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as s, atomic_file(dst, "wb", durable=True) as d:
        shutil.copyfileobj(s, d)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return f"[{len(v)} rows]"
    return str(v)
