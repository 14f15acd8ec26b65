"""The orchestrator: runs a RunSpec's stages in order inside one run directory.

It owns what is the same for every task: the stage order and rounds, the run directory (one
writer, status.json, the heartbeat), resume (what is complete, the resume point of the stage in
progress), committing each stage's output, `original` (the model before the latest prune), and
the summary with its comparison. What a stage does with a model comes from the run's task
(engine/task.py: classification, or a detection family) and from the shared stages
(engine/slim/stages.py, engine/deploy/stages.py).

The pipeline carries a *current model* from stage to stage (train -> sparse -> prune ->
finetune ...). Each stage leaves `weights/<stage>.pt`; `weights/best.pt` is always the latest
stage's model, `weights/last.pt` the resume point of a training stage in progress.
status.json lists the completed stages, so a resumed run skips them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine import checkpoint, distributed, threads
from engine import resume as on_disk
from engine import trust as trust_rule
from engine.atomic import atomic_copy
from engine.config import CONTROL_STAGES, TRAINING_STAGES, PruneStage, RunSpec
from engine.errors import Cancelled, CheckpointError, PresetError, RunError, SlimlabError
from engine.runs import RunLock, RunWriter
from engine.task import Current, kind_of
from engine.train import StopFlag, resolve_device

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
        self.current: Current | None = None
        self.outputs: dict[str, Path] = {}
        self.original: Path | None = None  # the model before the latest prune, for `teacher: original`
        self.resuming: str | None = None  # the stage a resume continues (its stale metrics are dropped)
        self._stopped_stage: str | None = None  # the stage in progress when the resumed run stopped
        self.nothing_to_do = False  # set by a resume of a run whose stages are all done
        self._checked = checked  # the whole preset was checked already (engine/preflight.py)
        self.kind = kind_of(spec)
        self.task = self.kind.create(self)  # classification, or a detection family (engine/task.py)

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
                    self.current = self.load_output(self.last_name())  # resuming after earlier stages
                # a stage resumed where it stopped keeps the progress it had reached, not 0%
                kept = resume and stage.name == self._stopped_stage
                w.status(stage=stage.name, stage_index=i, **({} if kept else {"progress": 0.0}))
                w.log(f"stage {stage.name} ({stage.type}) starts")
                t0 = time.time()
                state = self._resume_state(stage) if resume else None
                if kept and state is None:  # no usable resume point: the stage starts over
                    w.status(progress=0.0)
                self.resuming = stage.name if resume else None
                figures = self.runner(stage)(stage, state)
                figures["seconds"] = round(time.time() - t0, 2)
                self._commit(stage, figures, done)
                # every rank stops after the same stage (a signal may have reached one of them only)
                if distributed.any_true(self.stop.requested, self.dist, self.device):
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

        The stage's output (weights/<stage>.pt, written by `finish`) comes first, so a kill in
        between leaves an output that a resume finds (`_recover`): the stage is not redone."""
        w, name = self.writer, stage.name
        last = w.weights / "last.pt"
        if self.dist.is_main and last.exists() and self._last_stage(last) == name:
            last.unlink()
            w.log(f"stage {name}: removed weights/last.pt, its resume point (the stage is complete)")
        w.summary(name, figures)
        done.append(name)
        w.status(completed=done, outputs={k: str(v) for k, v in self.outputs.items()},
                 original=str(self.original) if self.original else None, **self._headline(stage, figures))
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
            self.original = self.current_output(stage) or w.weights / "original.pt"
        if out.exists():
            self.outputs[stage.name] = out
            self.current = None  # the next stage starts from the outputs on disk
            best = self.last_output() if stage.type in CONTROL_STAGES else out
            if best is not None and self.dist.is_main:  # finish may have stopped before its copy
                atomic_copy(best, w.weights / "best.pt")
        if figures is None:
            loaded = checkpoint.load(out, trust=self.trust)
            figures = self.task.measure(Current(loaded.model, loaded.arch, loaded.plan), out)
            figures["note"] = "figures measured again from the output after a stop"
            w.log(f"resume: stage {stage.name} had written weights/{out.name} but not its figures when the run "
                  "stopped; the stage is complete and not redone, its figures are measured again from the output")
        else:
            w.log(f"resume: stage {stage.name} had finished (summary.json holds its figures) but was not marked "
                  "complete when the run stopped; marked complete now, not redone")
        self._commit(stage, figures, done)
        return True

    def _headline(self, stage: Any, figures: dict[str, Any]) -> dict[str, Any]:
        """status.json's headline figure (`best_accuracy`, `best_mAP50_95`) is the current model's: the
        stage output the run hands on and deploys. A control stage (scratch, uniform) is reported
        beside it in summary.json but never becomes the headline, whatever it scored."""
        key = self.kind.metric.key
        value = figures.get(key)
        if stage.type in CONTROL_STAGES or "artifacts" in figures or not isinstance(value, int | float):
            return {}
        return {f"best_{key}": value, "model_stage": stage.name}

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
        """summary.json's `comparison`: every stage's metric, params and FLOPs side by side, then
        the deployable files (timed side by side, engine/deploy/stages.py)."""
        path = self.writer.path / "summary.json"
        if not self.dist.is_main or not path.exists():
            return
        summary = json.loads(path.read_text())
        metric = self.kind.metric
        rows = {name: {k: fig.get(k) for k in (*metric.columns, "params", "flops", "latency_b1_ms")}
                | ({"control": fig["control"]} if fig.get("control") else {})
                for name, fig in summary.items()
                if isinstance(fig, dict) and metric.key in fig and "artifacts" not in fig and name != "comparison"}
        if any(isinstance(fig, dict) and fig.get("artifacts") for fig in summary.values()):
            from engine.deploy.stages import comparison_rows

            rows |= comparison_rows(self, summary)
        self.writer.summary("comparison", rows)
        self.writer.log("comparison: " + "; ".join(f"{k} {metric.named(v[metric.key])}" for k, v in rows.items()
                                                   if v.get(metric.key) is not None))

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

    # ---------------------------------------------------------- the stages

    def runner(self, stage: Any) -> Callable[[Any, dict | None], dict]:
        """What runs `stage`: the task's own runner for its training stages, else the shared one.
        A stage the task cannot run is refused here (and, with the same message, by the preset check)."""
        why = self.kind.refusal(stage)
        if why:
            raise PresetError(why)
        own = self.task.runners()
        if stage.type in own:
            return own[stage.type]
        return self.shared_runners()[stage.type]

    def shared_runners(self) -> dict[str, Callable[[Any, dict | None], dict]]:
        from engine.deploy import stages as deploy
        from engine.slim import stages as slimming

        return {
            "evaluate": self.evaluate_stage,
            "prune": lambda stage, resume: slimming.prune_stage(self, stage),
            "sweep": lambda stage, resume: slimming.sweep_stage(self, stage),
            "export": lambda stage, resume: deploy.export_stage(self, stage),
            "quantize": lambda stage, resume: deploy.quantize_stage(self, stage),
            "compress": lambda stage, resume: deploy.compress_stage(self, stage, resume),
        }

    def evaluate_stage(self, stage: Any, resume: dict | None) -> dict:
        """The current model measured (and recorded as this stage's output)."""
        cur = self.start(stage)
        out = self.current_output(stage) or self.finish(stage, cur)
        return self.task.measure(cur, out)

    # ---------------------------------------------------------- what tasks and stages share

    def _apply_threads(self) -> None:
        """training.threads for the whole run; the value used goes to the log and status.json."""
        used, note = threads.apply(self.spec.training.threads)
        if note:
            self.say([f"warning: {note}"])
        self.writer.log(f"threads: {used} torch intra-op thread{'s' if used != 1 else ''}")
        self.writer.status(threads=used)

    def start(self, stage: Any) -> Current:
        """The model a stage starts from: a fresh one it names, an earlier stage's output, or the current one."""
        if stage.model is not None:
            return self.task.fresh(stage.model)
        if stage.start is not None:
            return self.load_output(stage.start)
        if self.current is None:
            self.current = self.task.fresh(self.spec.model)
        return self.current

    def load_output(self, name: str) -> Current:
        loaded = checkpoint.load(self.outputs[name], trust=self.trust)
        return Current(loaded.model, loaded.arch, loaded.plan)

    def finish(self, stage: Any, cur: Current, src: Path | None = None) -> Path:
        """Record a stage's output model as weights/<stage>.pt and weights/best.pt.

        Written only when the stage's work is done: a resume that finds weights/<stage>.pt
        does not redo the stage (`_recover`). `src`: a checkpoint holding the output already."""
        out = self.writer.weights / f"{stage.name}.pt"
        if self.dist.is_main:
            if src is not None:
                atomic_copy(src, out)
            else:
                checkpoint.save(out, cur.model, cur.arch, plan=cur.plan, meta={"stage": stage.name, "spec": self.spec.model_dump(mode="json")})
            if stage.type not in CONTROL_STAGES:  # best.pt: the latest stage's model
                atomic_copy(out, self.writer.weights / "best.pt")
        distributed.barrier(self.dist)
        self.outputs[stage.name] = out
        if stage.type not in CONTROL_STAGES:
            self.current = cur
        return out

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Rank 0 running a step by itself under torchrun while the other ranks wait for the whole
        step in one barrier: the barriers inside it (`finish`'s) are skipped, as in one process."""
        saved = self.dist
        self.dist = distributed.DistInfo(rank=saved.rank, world_size=1, local_rank=saved.local_rank)
        try:
            yield
        finally:
            self.dist = saved

    def restore_best(self) -> None:
        """weights/best.pt back to the latest stage output that is not a control's (a control
        stage's trainer wrote its own epochs there)."""
        before = self.last_output()
        if before is not None and self.dist.is_main:
            atomic_copy(before, self.writer.weights / "best.pt")

    def keep_cut(self, stage: Any, cur: Current, model: Any, plan: Any) -> tuple[Current, Path]:
        """A prune stage's cut model kept: plan.json, the report (warnings, totals, groups) in log.txt
        and the headless output, and weights/<stage>.pt. `plan` is the cut just applied to `model`."""
        from engine.runs import write_json
        from engine.slim import plan as slim_plan
        from engine.slim.report import prune_lines

        lines = prune_lines(stage.name, plan)  # the cut of this stage, before composing
        if cur.plan:  # a later round: one plan relative to the unpruned arch keeps reloads simple
            from engine.slim.compose import compose

            plan = compose(slim_plan.PrunePlan.from_dict(cur.plan), plan)
        plan_dict = plan.to_dict()
        if self.dist.is_main:
            write_json(self.writer.path / "plan.json", plan_dict)
        self.say(lines)
        pruned = Current(model, cur.arch, plan_dict)
        return pruned, self.finish(stage, pruned)

    def save_original(self, cur: Current) -> Path:
        path = self.writer.weights / "original.pt"
        if self.dist.is_main:
            checkpoint.save(path, cur.model, cur.arch, plan=cur.plan)
        return path

    def teacher_path(self, name: str | None, stage: Any) -> Path:
        """The checkpoint a stage's `teacher` names: original (the model before the latest prune), an
        earlier stage's output, or a checkpoint file (a run directory: its weights/best.pt)."""
        from engine.errors import DistillError

        if name is None:
            raise DistillError(f"stage {stage.name}: kd or feature terms need a teacher (original, a stage name, or a checkpoint)")
        if name == "original":
            if self.original is None:
                raise DistillError(f"stage {stage.name}: teacher 'original' means the model before pruning, but no prune stage ran before it")
            return self.original
        if name in self.outputs:
            return self.outputs[name]
        path = Path(name)
        if path.is_dir():
            path = path / "weights" / "best.pt"
        if not path.exists():
            raise DistillError(f"stage {stage.name}: teacher checkpoint {path} does not exist")
        return path

    def current_output(self, stage: Any) -> Path | None:
        """The file holding the model this stage starts from, when it is the pipeline's current one."""
        if stage.model is None and stage.start is None and self.outputs:
            return self.last_output()
        return None

    def last_name(self) -> str | None:
        """The latest stage whose output became the current model (a control stage's never does)."""
        kinds = {s.name: s.type for s in self.stages}
        names = [n for n in self.outputs if kinds.get(n) not in CONTROL_STAGES]
        return names[-1] if names else None

    def last_output(self) -> Path | None:
        name = self.last_name()
        return self.outputs[name] if name else None

    def say(self, lines: list[str]) -> None:
        """Lines for the headless output (and log.txt)."""
        for line in lines:
            self.writer.log(line)
        if self.dist.is_main and hasattr(self.reporter, "message"):
            self.reporter.message("\n".join(lines))

    def progress(self, stage: Any, start: float = 0.0, span: float = 1.0) -> Callable[[float, str], None]:
        """progress(fraction, what) of a step that covers [start, start + span] of the stage: status.json's
        `progress` and `activity` ("<stage>: <what>"), which the monitor shows."""

        def report(fraction: float, what: str) -> None:
            self.writer.status(progress=round(start + span * fraction, 3), activity=f"{stage.name}: {what}")

        return report

    def stage_setting(self, stage: Any, item: str) -> str:
        """`training.lr=x` as this stage's `stages.N.training.lr=x` when the stage sets its own."""
        key, _, value = item.partition("=")
        if not key.startswith("training."):
            return item
        base = stage.name.split("-r")[0] if stage.name not in [s.name for s in self.spec.stages] else stage.name
        index = next((i for i, s in enumerate(self.spec.stages) if s.name == base), None)
        own = index is not None and getattr(self.spec.stages[index].training, key.split(".", 1)[1], None) is not None
        return f"stages.{index}.{key}={value}" if own else item

    def drop_redone_metrics(self, name: str, resume: dict | None) -> None:
        """metrics.jsonl keeps each step once: the lines after the resume point are redone."""
        if self.resuming != name:
            return
        pos = on_disk.last_position(resume) if resume is not None else None
        if pos is None:
            dropped = self.writer.drop_metrics(name)
        else:
            dropped = self.writer.drop_metrics(name, after_step=int(pos.get("step", 0)), from_epoch=int(pos.get("epoch", 0)))
        if dropped:
            self.writer.log(f"resume: dropped {dropped} metrics line{'s' if dropped > 1 else ''} of stage {name} "
                            "written after its resume point (those steps are redone)")


def failure_reason(e: BaseException, run: Path) -> str:
    """One readable line for status.json: a failed write says which disk and why."""
    if isinstance(e, OSError) and not isinstance(e, SlimlabError):
        from engine.atomic import describe_os_error

        return describe_os_error(e, run)
    return f"{type(e).__name__}: {e}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return f"[{len(v)} rows]"
    return str(v)
