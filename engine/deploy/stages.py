"""The export, quantize and compress stages of a run, and the run's artifact comparison.

Files land in the run directory: `<stage>.onnx` for an export stage (and `original.onnx`, the
model before the run's first prune, for the comparison), `<stage>.int8.onnx` for a quantize
stage, `<stage>.zip` for a compress stage. Each stage's summary entry lists its artifacts;
`comparison_rows` times them all side by side at the end of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import checkpoint
from engine.deploy.artifacts import export_file
from engine.deploy.data import Images
from engine.errors import DeployError

ORIGINAL = "original.onnx"


def _log(pipe: Any):
    return pipe.writer.log


def _progress(pipe: Any, stage: Any, start: float = 0.0, span: float = 1.0):
    """progress(fraction, what) of a step that covers [start, start + span] of the stage: status.json's
    `progress` and `activity` ("<stage>: <what>"), which the monitor shows."""

    def report(fraction: float, what: str) -> None:
        pipe.writer.status(progress=round(start + span * fraction, 3), activity=f"{stage.name}: {what}")

    return report


def run_images(pipe: Any) -> Images:
    """The run's own data: validation images for checks and accuracy, training images for calibration."""
    if getattr(pipe.spec, "task", "classify") != "classify":
        raise DeployError(f"the export, quantize and compress stages take classification models; this run's task is "
                          f"{pipe.spec.task}")
    bundle = pipe.data(pipe.spec.training.batch_size)
    return Images(bundle, f"{pipe.spec.data.dataset} data", tuple(bundle.mean), tuple(bundle.std))


def unpruned(pipe: Any, cur: Any) -> tuple[str, Path] | None:
    """(stage, file) of the model before the run's first prune, when the current model is pruned."""
    if not cur.plan:
        return None
    first = next((i for i, s in enumerate(pipe.stages) if s.type == "prune"), None)
    if first is None:
        return None  # pruned before this run started: nothing unpruned to compare with
    before = [s.name for s in pipe.stages[:first] if s.name in pipe.outputs]
    path = pipe.outputs[before[-1]] if before else pipe.writer.weights / "original.pt"
    return (before[-1] if before else "original", path) if path.exists() else None


def main_rank_only(work):
    """Under torchrun, rank 0 exports or quantizes while the other ranks wait for it."""

    def run(pipe: Any, *args: Any) -> dict[str, Any]:
        from engine import distributed

        figures = work(pipe, *args) if pipe.dist.is_main else {}
        distributed.barrier(pipe.dist)
        return figures

    return run


@main_rank_only
def export_stage(pipe: Any, stage: Any, cur: Any, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    from engine.models.sizing import parse_input_size

    images = run_images(pipe)
    shape = parse_input_size(stage.input_size) if stage.input_size else tuple(input_shape)
    images.check_fits(shape, f"stage {stage.name} (input size {'x'.join(map(str, shape))})")
    batch = None if stage.batch == "dynamic" else int(stage.batch)
    todo: list[tuple[str, Any, Path]] = []
    source = unpruned(pipe, cur) if stage.original else None
    if source is not None:
        todo.append((source[0], checkpoint.load(source[1], trust=pipe.trust), pipe.writer.path / ORIGINAL))
    todo.append((pipe._last_name() or "model", cur, pipe.writer.path / f"{stage.name}.onnx"))
    artifacts = []
    for i, (from_stage, model, out) in enumerate(todo):
        step = _progress(pipe, stage, i / len(todo), 1 / len(todo))
        pipe.writer.log(f"{stage.name}: exporting the {'unpruned' if out.name == ORIGINAL else 'current'} model "
                        f"({from_stage}) to {out.name}")
        meta = {"stage": from_stage, "run": pipe.writer.path.name, "spec": pipe.spec.model_dump(mode="json")}
        record = export_file(
            model.model, out, input_shape=shape, images=images, batch=batch, opset=stage.opset,
            class_names=list(images.bundle.class_names), arch=model.arch, plan=model.plan, meta=meta,
            log=_log(pipe), progress=step,
        )
        record["from"] = from_stage
        artifacts.append(record)
        pipe.writer.log(f"{stage.name}: {out.name} reproduces PyTorch within {record['max_abs_diff']:.2g} on "
                        f"{record['checked_on']}; accuracy {record['accuracy']:.2%} through onnxruntime")
    pipe.writer.status(activity=None)
    main = artifacts[-1]
    return {k: main[k] for k in ("accuracy", "params", "flops", "size", "max_abs_diff", "opset")} | {
        "file": main["file"], "artifacts": artifacts}


def export_source(pipe: Any, stage: Any) -> tuple[str, Path]:
    """(export stage name, its ONNX file) that a quantize stage reads."""
    names = [s.name for s in pipe.stages]
    earlier = [s for s in pipe.stages[: names.index(stage.name)] if s.type == "export"]
    chosen = next((s for s in earlier if s.name == stage.source), None) if stage.source else (earlier[-1] if earlier else None)
    if chosen is None:
        raise DeployError(f"stage {stage.name}: no export stage before it to quantize")
    path = pipe.writer.path / f"{chosen.name}.onnx"
    if not path.exists():
        raise DeployError(f"stage {stage.name}: {path} is missing; run the export stage {chosen.name} again")
    return chosen.name, path


def _say(pipe: Any, line: str) -> None:
    """A line for the log and, in a headless run, the terminal."""
    pipe.writer.log(line)
    message = getattr(pipe.reporter, "message", None)
    if message is not None and pipe.dist.is_main:
        message(line)


@main_rank_only
def quantize_stage(pipe: Any, stage: Any) -> dict[str, Any]:
    from engine.deploy import onnxfile
    from engine.deploy.artifacts import write_int8
    from engine.deploy.quantize import QuantizeOptions, quantize

    src_stage, src = export_source(pipe, stage)
    fp32 = onnxfile.read(src)
    info = onnxfile.describe(fp32, src, src.stat().st_size)
    images = run_images(pipe)
    if isinstance(info.metadata.get("mean"), list) and isinstance(info.metadata.get("std"), list):
        images.mean, images.std = tuple(info.metadata["mean"]), tuple(info.metadata["std"])
    images.check_fits(info.chw or images.shape, src.name, info.num_classes)
    options = QuantizeOptions(samples=stage.samples, method=stage.method, per_channel=stage.per_channel,
                              activations=stage.activations, max_drop=stage.max_drop)
    pipe.writer.log(f"{stage.name}: INT8 of {src.name}, calibrated on {stage.samples} training images ({stage.method})")
    result = quantize(fp32, images.calibration(stage.samples), images.val, options, log=pipe.writer.log,
                      progress=_progress(pipe, stage))
    pipe.writer.status(activity=None)
    out = pipe.writer.path / f"{stage.name}.int8.onnx"
    figures = {"fp32_accuracy": result.fp32_accuracy, "attempts": result.attempts, "source": src.name, **result.settings}
    if result.model is None:
        out.unlink(missing_ok=True)  # an INT8 file from an earlier attempt is not this run's answer
        _say(pipe, f"{stage.name}: {result.message}")
        return {"accuracy": result.fp32_accuracy, "kept": "fp32", "file": src.name, "message": result.message,
                **figures, "artifacts": []}
    record = write_int8(result, info, out) | {"from": src_stage}
    drop = result.drop
    _say(pipe, f"{stage.name}: {out.name}: INT8 accuracy {result.accuracy:.2%} vs fp32 {result.fp32_accuracy:.2%} "
               f"({'loses' if drop >= 0 else 'gains'} {abs(drop):.2f} points) through onnxruntime"
               + (f"; {result.message}" if result.message else ""))
    return {"accuracy": result.accuracy, "params": record["params"], "flops": record["flops"], "size": record["size"],
            "file": out.name, "fp32_layers": result.excluded, **figures, "artifacts": [record]}


# ---------------------------------------------------------------- the comparison


def artifacts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every deploy stage's artifact records, in stage order."""
    found = []
    for name, fig in summary.items():
        if isinstance(fig, dict) and name != "comparison":
            found.extend(a for a in fig.get("artifacts", []) if isinstance(a, dict))
    return found


def comparison_rows(pipe: Any, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Artifact rows for summary.json's comparison: figures plus onnxruntime latency at batch 1 and 32,
    all artifacts timed back to back, interleaved, with the run's fixed thread count."""
    from engine.deploy import latency, runtime

    records = [a for a in artifacts(summary) if (pipe.writer.path / a["file"]).exists()]
    if not records:
        return {}
    cfg = pipe.spec.latency
    pipe.writer.log(f"latency: timing {len(records)} artifacts with onnxruntime, {cfg.threads} thread(s), "
                    f"median of {cfg.repeats} interleaved rounds (best of {cfg.runs} runs each) at batch "
                    f"{' and '.join(map(str, latency.BATCHES))}")
    pipe.writer.status(activity=f"timing {len(records)} files with onnxruntime")
    shape = _input_shape(pipe, records)
    sessions = {a["name"]: runtime.session(_runnable(pipe, a, shape), cfg.threads) for a in records}
    times = latency.measure(sessions, shape, warmup=cfg.warmup, repeats=cfg.repeats, runs=cfg.runs)
    pipe.writer.status(activity=None)
    rows = {}
    for a in records:
        t = times[a["name"]]
        rows[a["name"]] = {
            "accuracy": a.get("accuracy"), "params": a.get("params"), "flops": a.get("flops"), "size": a.get("size"),
            "latency_b1_ms": t.get(1), "latency_b32_ms": t.get(32), "threads": cfg.threads,
            "format": a["format"], "file": a["file"], "from": a.get("from"),
            **{k: a[k] for k in ("mAP50", "mAP50_95") if k in a},  # a detection model's files
        }
    return rows


def _runnable(pipe: Any, record: dict[str, Any], shape: tuple[int, int, int]) -> Any:
    """What onnxruntime runs for an artifact: an ONNX file itself; a compressed file decoded to the
    dense model it deploys as, exported in memory."""
    path = pipe.writer.path / record["file"]
    if path.suffix == ".onnx":
        return path
    from engine.deploy import compressed, export, onnxfile

    model, _ = compressed.load(path, trust=pipe.trust)
    return onnxfile.serialize(export.export(model, shape, log=pipe.writer.log).model)


def _input_shape(pipe: Any, records: list[dict[str, Any]]) -> tuple[int, int, int]:
    from engine.deploy import onnxfile

    for a in records:
        path = pipe.writer.path / a["file"]
        if path.suffix == ".onnx":
            chw = onnxfile.peek(path).chw
            if chw:
                return chw
    return pipe._input_shape()


def compress_stage(pipe: Any, stage: Any, cur: Any, resume: dict | None) -> dict[str, Any]:
    """Magnitude pruning, optional finetuning with the zeros held, k-means weight sharing; the
    compressed file is written, reloaded, and its accuracy measured on the reloaded model."""
    import copy

    import torch

    from engine import distributed, measure
    from engine.deploy import compress, compressed
    from engine.train import evaluate

    val = run_images(pipe).bundle.val
    cpu = torch.device("cpu")
    source = pipe._last_name() or "model"
    say = _progress(pipe, stage)
    model = copy.deepcopy(cur.model).cpu().float()
    say(0.0, "magnitude pruning")
    sparsity = compress.magnitude_prune(model, stage.sparsity)
    acc_pruned = evaluate(model, val, cpu)["accuracy"]
    pipe.writer.log(f"{stage.name}: {sparsity:.1%} of the conv/linear weights are zero after global magnitude "
                    f"pruning; accuracy {acc_pruned:.2%} before {'finetuning and ' if stage.finetune_epochs else ''}"
                    f"weight sharing")
    if stage.finetune_epochs:
        epochs = stage.training.model_copy(update={"epochs": stage.finetune_epochs})
        held = compress.KeepZeros(model)
        pipe._train(stage.model_copy(update={"training": epochs}), resume, [held],
                    cur=type(cur)(model.to(pipe.device), cur.arch, cur.plan))
        model = pipe.current.model.cpu().float()
    say(0.9, f"k-means weight sharing ({2 ** stage.bits} values per layer)")
    encoded = compress.share_weights(model, stage.bits)
    out = pipe.writer.path / f"{stage.name}.zip"
    meta = {"stage": stage.name, "from": source, "run": pipe.writer.path.name, "sparsity": stage.sparsity,
            "bits": stage.bits, "spec": pipe.spec.model_dump(mode="json")}
    if pipe.dist.is_main:  # every rank shares the same weights (deterministic); one writes them
        compressed.save(out, model.state_dict(), encoded, bits=stage.bits, arch=cur.arch, plan=cur.plan, meta=meta)
    distributed.barrier(pipe.dist)
    size = out.stat().st_size
    reloaded, _ = compressed.load(out, trust=pipe.trust)
    say(0.95, f"accuracy of the reloaded {out.name}")
    accuracy = evaluate(reloaded, val, cpu)["accuracy"]
    pipe.writer.status(activity=None)
    dense = pipe._finish(stage, type(cur)(reloaded, cur.arch, cur.plan))  # weights/<stage>.pt: the decoded model
    shape = pipe._input_shape()
    params_dense = measure.count_params(reloaded)
    nonzero = compress.nonzero_params(reloaded)
    flops = measure.count_flops(reloaded, shape)
    dense_size = dense.stat().st_size
    _say(pipe, f"{stage.name}: {out.name} is {size / 2**10:.1f} KiB vs {dense_size / 2**10:.1f} KiB dense "
               f"({dense_size / size:.1f}x smaller): {compress.sparsity_of(reloaded):.1%} zeros, "
               f"{2 ** stage.bits} shared values per layer; accuracy {accuracy:.2%} on the reloaded model. "
               f"Note: {compress.NOT_FASTER}")
    record = {"name": out.name, "file": out.name, "format": f"sparse-{stage.bits}bit", "accuracy": accuracy,
              "params": nonzero, "flops": flops, "size": size, "sparsity": compress.sparsity_of(reloaded),
              "bits": stage.bits, "dense_size": dense_size, "from": source}
    return {"accuracy": accuracy, "accuracy_pruned": acc_pruned, "sparsity": record["sparsity"], "bits": stage.bits,
            "params": nonzero, "params_dense": params_dense, "flops": flops, "size": size, "dense_size": dense_size,
            "compression": round(dense_size / size, 2), "file": out.name, "note": compress.NOT_FASTER,
            "artifacts": [record]}
