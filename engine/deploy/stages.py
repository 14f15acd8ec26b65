"""The export, quantize and compress stages of a run, and the run's artifact comparison.

Files land in the run directory: `<stage>.onnx` for an export stage (and `original.onnx`, the
model before the run's first prune, for the comparison; a detection run's `formats` beside them,
e.g. `<stage>_openvino_model/`, see engine/detect/runtimes.py), `<stage>.int8.onnx` for a quantize
stage, `<stage>.zip` for a compress stage. Each stage's summary entry lists its artifacts;
`comparison_rows` times them all side by side at the end of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import checkpoint
from engine.errors import DeployError

ORIGINAL = "original.onnx"


def unpruned(run: Any, cur: Any) -> tuple[str, Path] | None:
    """(stage, file) of the model before the run's first prune, when the current model is pruned."""
    if not cur.plan:
        return None
    first = next((i for i, s in enumerate(run.stages) if s.type == "prune"), None)
    if first is None:
        return None  # pruned before this run started: nothing unpruned to compare with
    before = [s.name for s in run.stages[:first] if s.name in run.outputs]
    path = run.outputs[before[-1]] if before else run.writer.weights / "original.pt"
    return (before[-1] if before else "original", path) if path.exists() else None


def main_rank_only(work):
    """Under torchrun, rank 0 exports or quantizes while the other ranks wait for it."""

    def run_once(run: Any, *args: Any) -> dict[str, Any]:
        from engine import distributed

        figures = work(run, *args) if run.dist.is_main else {}
        distributed.barrier(run.dist)
        return figures

    return run_once


@main_rank_only
def export_stage(run: Any, stage: Any) -> dict[str, Any]:
    """ONNX of the current model (and of the unpruned one, for the comparison), each checked against
    PyTorch on the run's validation images and measured through onnxruntime by the task."""
    task = run.task
    metric = task.kind.metric
    why = task.kind.refusal(stage)
    if why:
        raise DeployError(why)
    if stage.formats:  # refused before anything is written: a missing package, with its install step
        task.refuse_formats(stage.formats, f"stage {stage.name}")
    cur = run.start(stage)
    shape = task.export_shape(stage.input_size, f"stage {stage.name}")
    batch = None if stage.batch == "dynamic" else int(stage.batch)
    todo: list[tuple[str, Any, Path]] = []
    source = unpruned(run, cur) if stage.original else None
    if source is not None:
        todo.append((source[0], checkpoint.load(source[1], trust=run.trust), run.writer.path / ORIGINAL))
    todo.append((run.last_name() or "model", cur, run.writer.path / f"{stage.name}.onnx"))
    artifacts = []
    steps = len(todo) + len(stage.formats)
    for i, (from_stage, model, out) in enumerate(todo):
        step = run.progress(stage, i / steps, 1 / steps)
        run.writer.log(f"{stage.name}: exporting the {'unpruned' if out.name == ORIGINAL else 'current'} model "
                       f"({from_stage}) to {out.name}")
        meta = {"stage": from_stage, "run": run.writer.path.name, "spec": run.spec.model_dump(mode="json")}
        record = task.export_file(model, out, shape=shape, batch=batch, opset=stage.opset, meta=meta, progress=step)
        record["from"] = from_stage
        artifacts.append(record)
        measured = f"; {metric.label} {metric.format(record[metric.key])} through onnxruntime" \
            if record.get(metric.key) is not None else ""
        run.writer.log(f"{stage.name}: {out.name} reproduces PyTorch within {record['max_abs_diff']:.2g} on "
                       f"{record['checked_on']}{measured}")
    main = artifacts[-1]
    for j, fmt in enumerate(stage.formats):
        step = run.progress(stage, (len(todo) + j) / steps, 1 / steps)
        record = task.export_runtime(todo[-1][1], fmt, stem=stage.name, imgsz=shape[1], samples=stage.samples,
                                     progress=step)
        record["from"] = todo[-1][0]
        artifacts.append(record)
        run.say([f"{stage.name}: {record['file']} ({record['format']}): {metric.label} "
                 f"{metric.format(record[metric.key])} through Ultralytics' {record['runtime']} backend"])
    run.writer.status(activity=None)
    keys = (*metric.record, "params", "flops", "size", "max_abs_diff", "opset")
    return {k: main[k] for k in keys if k in main} | {"file": main["file"], "artifacts": artifacts}


def export_source(run: Any, stage: Any) -> tuple[str, Path]:
    """(export stage name, its ONNX file) that a quantize stage reads."""
    names = [s.name for s in run.stages]
    earlier = [s for s in run.stages[: names.index(stage.name)] if s.type == "export"]
    chosen = next((s for s in earlier if s.name == stage.source), None) if stage.source else (earlier[-1] if earlier else None)
    if chosen is None:
        raise DeployError(f"stage {stage.name}: no export stage before it to quantize")
    path = run.writer.path / f"{chosen.name}.onnx"
    if not path.exists():
        raise DeployError(f"stage {stage.name}: {path} is missing; run the export stage {chosen.name} again")
    return chosen.name, path


@main_rank_only
def quantize_stage(run: Any, stage: Any) -> dict[str, Any]:
    """Static INT8 of an export stage's file, within `max_drop` points of the task's metric."""
    from engine.deploy import onnxfile
    from engine.deploy.artifacts import write_int8
    from engine.deploy.quantize import QuantizeOptions, quantize

    metric = run.task.kind.metric
    src_stage, src = export_source(run, stage)
    fp32 = onnxfile.read(src)
    info = onnxfile.describe(fp32, src, src.stat().st_size)
    data = run.task.quantize_data(info, stage.samples, src.name)
    for note in data.notes:
        run.say([f"{stage.name}: {note}"])
    options = QuantizeOptions(samples=stage.samples, method=stage.method, per_channel=stage.per_channel,
                              activations=stage.activations, max_drop=stage.max_drop)
    used = sum(len(b) for b in data.calibration)
    run.writer.log(f"{stage.name}: INT8 of {src.name}, calibrated on {used} training images ({stage.method})")
    result = quantize(fp32, data, options, log=run.writer.log, progress=run.progress(stage), metric=metric)
    run.writer.status(activity=None)
    out = run.writer.path / f"{stage.name}.int8.onnx"
    figures = {f"fp32_{metric.key}": result.fp32_accuracy, "attempts": result.attempts, "source": src.name,
               **result.settings, "samples": used}
    fp32 = {k: v for k, v in result.fp32_figures.items() if k in metric.record}
    if result.model is None:
        out.unlink(missing_ok=True)  # an INT8 file from an earlier attempt is not this run's answer
        run.say([f"{stage.name}: {result.message}"])
        return {metric.key: result.fp32_accuracy, **fp32, "kept": "fp32", "file": src.name, "message": result.message,
                **figures, "artifacts": []}
    record = write_int8(result, info, out) | {"from": src_stage}
    drop = result.drop
    run.say([f"{stage.name}: {out.name}: INT8 {metric.label} {metric.format(result.accuracy)} vs fp32 "
             f"{metric.format(result.fp32_accuracy)} ({'loses' if drop >= 0 else 'gains'} {abs(drop):.2f} points) "
             "through onnxruntime" + (f"; {result.message}" if result.message else "")])
    measured = {k: v for k, v in result.figures.items() if k in metric.record}
    return {metric.key: result.accuracy, **measured, "params": record["params"], "flops": record["flops"],
            "size": record["size"], "file": out.name, "fp32_layers": result.excluded, **figures,
            "fp32": fp32, "artifacts": [record]}


# ---------------------------------------------------------------- the comparison


def artifacts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every deploy stage's artifact records, in stage order."""
    found = []
    for name, fig in summary.items():
        if isinstance(fig, dict) and name != "comparison":
            found.extend(a for a in fig.get("artifacts", []) if isinstance(a, dict))
    return found


def comparison_rows(run: Any, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Artifact rows for summary.json's comparison: figures plus latency at the task's batch sizes, each
    artifact in its own runtime (onnxruntime for ONNX files), all timed back to back, interleaved, with
    the run's fixed thread count."""
    from engine.deploy import latency

    records = [a for a in artifacts(summary) if (run.writer.path / a["file"]).exists()]
    if not records:
        return {}
    cfg = run.spec.latency
    kind = run.task.kind
    batches = kind.latency_batches
    engines = sorted({a.get("runtime", "onnxruntime") for a in records})
    run.writer.log(f"latency: timing {len(records)} artifacts with {', '.join(engines)}, {cfg.threads} thread(s), "
                   f"median of {cfg.repeats} interleaved rounds (best of {cfg.runs} runs each) at batch "
                   f"{' and '.join(map(str, batches))}")
    run.writer.status(activity=f"timing {len(records)} files with {', '.join(engines)}")
    shape = _input_shape(run, records)
    sessions = {a["name"]: _timed(run, a, shape, cfg.threads) for a in records}
    times = latency.measure(sessions, shape, batches=batches, warmup=cfg.warmup, repeats=cfg.repeats, runs=cfg.runs)
    run.writer.status(activity=None)
    rows = {}
    for a in records:
        t = times[a["name"]]
        rows[a["name"]] = {
            **{k: a.get(k) for k in kind.metric.columns if k != "test_accuracy"},
            "params": a.get("params"), "flops": a.get("flops"), "size": a.get("size"),
            **{f"latency_b{b}_ms": t.get(b) for b in batches}, "threads": cfg.threads,
            "speedup_batch": kind.speedup_batch, "format": a["format"], "file": a["file"], "from": a.get("from"),
            "runtime": a.get("runtime", "onnxruntime"),
        }
    return rows


def _timed(run: Any, record: dict[str, Any], shape: tuple[int, int, int], threads: int) -> Any:
    """What times an artifact: an onnxruntime session, or the runner of its own runtime."""
    from engine.deploy import runtime

    if record.get("runtime", "onnxruntime") != "onnxruntime":  # another runtime: the task that wrote it times it
        return run.task.runner(run.writer.path / record["file"], record["runtime"], threads)
    return runtime.session(_runnable(run, record, shape), threads)


def _runnable(run: Any, record: dict[str, Any], shape: tuple[int, int, int]) -> Any:
    """What onnxruntime runs for an artifact: an ONNX file itself; a compressed file decoded to the
    dense model it deploys as, exported in memory."""
    path = run.writer.path / record["file"]
    if path.suffix == ".onnx":
        return path
    from engine.deploy import compressed, export, onnxfile

    model, _ = compressed.load(path, trust=run.trust)
    return onnxfile.serialize(export.export(model, shape, log=run.writer.log).model)


def _input_shape(run: Any, records: list[dict[str, Any]]) -> tuple[int, int, int]:
    from engine.deploy import onnxfile

    for a in records:
        path = run.writer.path / a["file"]
        if path.suffix == ".onnx":
            chw = onnxfile.peek(path).chw
            if chw:
                return chw
    return run.task.input_shape()


def compress_stage(run: Any, stage: Any, resume: dict | None) -> dict[str, Any]:
    """Magnitude pruning, optional finetuning with the zeros held, k-means weight sharing; the
    compressed file is written, reloaded, and its metric measured on the reloaded model."""
    import copy

    import torch

    from engine import distributed, measure
    from engine.deploy import compress, compressed

    task = run.task
    metric = task.kind.metric
    cur = run.start(stage)
    cpu = torch.device("cpu")
    source = run.last_name() or "model"
    say = run.progress(stage)
    model = copy.deepcopy(cur.model).cpu().float()
    say(0.0, "magnitude pruning")
    sparsity = compress.magnitude_prune(model, stage.sparsity)
    acc_pruned = task.evaluate(model, device=cpu)[metric.key]
    run.writer.log(f"{stage.name}: {sparsity:.1%} of the conv/linear weights are zero after global magnitude "
                   f"pruning; {metric.label} {metric.format(acc_pruned)} before "
                   f"{'finetuning and ' if stage.finetune_epochs else ''}weight sharing")
    if stage.finetune_epochs:
        epochs = stage.training.model_copy(update={"epochs": stage.finetune_epochs})
        held = compress.KeepZeros(model)
        task.train(stage.model_copy(update={"training": epochs}), resume,
                   type(cur)(model.to(run.device), cur.arch, cur.plan), [held])
        model = run.current.model.cpu().float()
    say(0.9, f"k-means weight sharing ({2 ** stage.bits} values per layer)")
    encoded = compress.share_weights(model, stage.bits)
    out = run.writer.path / f"{stage.name}.zip"
    meta = {"stage": stage.name, "from": source, "run": run.writer.path.name, "sparsity": stage.sparsity,
            "bits": stage.bits, "spec": run.spec.model_dump(mode="json")}
    if run.dist.is_main:  # every rank shares the same weights (deterministic); one writes them
        compressed.save(out, model.state_dict(), encoded, bits=stage.bits, arch=cur.arch, plan=cur.plan, meta=meta)
    distributed.barrier(run.dist)
    size = out.stat().st_size
    reloaded, _ = compressed.load(out, trust=run.trust)
    say(0.95, f"{metric.label} of the reloaded {out.name}")
    accuracy = task.evaluate(reloaded, device=cpu)[metric.key]
    run.writer.status(activity=None)
    dense = run.finish(stage, type(cur)(reloaded, cur.arch, cur.plan))  # weights/<stage>.pt: the decoded model
    shape = task.input_shape()
    params_dense = measure.count_params(reloaded)
    nonzero = compress.nonzero_params(reloaded)
    flops = measure.count_flops(reloaded, shape)
    dense_size = dense.stat().st_size
    run.say([f"{stage.name}: {out.name} is {size / 2**10:.1f} KiB vs {dense_size / 2**10:.1f} KiB dense "
             f"({dense_size / size:.1f}x smaller): {compress.sparsity_of(reloaded):.1%} zeros, "
             f"{2 ** stage.bits} shared values per layer; {metric.label} {metric.format(accuracy)} on the reloaded "
             f"model. Note: {compress.NOT_FASTER}"])
    record = {"name": out.name, "file": out.name, "format": f"sparse-{stage.bits}bit", "accuracy": accuracy,
              "params": nonzero, "flops": flops, "size": size, "sparsity": compress.sparsity_of(reloaded),
              "bits": stage.bits, "dense_size": dense_size, "from": source}
    return {"accuracy": accuracy, "accuracy_pruned": acc_pruned, "sparsity": record["sparsity"], "bits": stage.bits,
            "params": nonzero, "params_dense": params_dense, "flops": flops, "size": size, "dense_size": dense_size,
            "compression": round(dense_size / size, 2), "file": out.name, "note": compress.NOT_FASTER,
            "artifacts": [record]}
