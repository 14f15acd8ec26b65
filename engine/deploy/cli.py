"""`slimlab export CKPT` and `slimlab quantize MODEL.onnx`: deployment from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.errors import DeployError, PresetError

RUNTIME_FORMATS = ("openvino", "openvino-int8", "ncnn", "litert-int8")  # engine/detect/formats.py

EXPORT_HELP = """\
Export a checkpoint to ONNX (torch.onnx's dynamo exporter) and check it before writing: onnx's
checker, then onnxruntime against PyTorch on a batch of validation images (max |difference|
at most 1e-3). The class names, input size, normalisation, accuracy and the checkpoint's
meta go into the ONNX metadata. The validation images come from --data, else from the
dataset the checkpoint was trained on (recorded in it); without either the check uses random
inputs and says so.
"""

QUANTIZE_HELP = """\
Static INT8 post-training quantization with onnxruntime's quantizer (QDQ format, int8 weights
per channel), calibrated on N training images, then the INT8 and fp32 accuracy on the
validation images through onnxruntime. When INT8 loses more than --max-drop points, the layers
it hurts most stay in fp32 until it does not; when even that fails no INT8 file is written.
"""


def export_parser() -> argparse.ArgumentParser:
    from engine.slim_cli import add_checkpoint_arguments

    p = argparse.ArgumentParser(prog="slimlab export", description=EXPORT_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_arguments(p)
    p.add_argument("--out", type=Path, help="ONNX file to write (default: CKPT with .onnx beside it)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default: any batch size) or a fixed batch size")
    p.add_argument("--data", metavar="PRESET_OR_DATA",
                   help="validation images for the check: a preset, a built-in preset name or a data folder "
                        "(a detection checkpoint: an Ultralytics dataset yaml)")
    p.add_argument("--format", choices=["onnx", "ultralytics", "yolov5", *RUNTIME_FORMATS], default="onnx",
                   help="onnx (default); for detection checkpoints also ultralytics (a .pt that Ultralytics' YOLO() "
                        "and the yolo CLI load), yolov5 (a yolov5: model as a YOLOv5-repository best.pt, for its "
                        "val.py / detect.py) and, through Ultralytics' exporters, openvino, openvino-int8 (NNCF), "
                        "ncnn, litert-int8, each with its mAP through its own runtime (those whose packages are "
                        "installed; the others are refused with the install step)")
    p.add_argument("--samples", type=int, default=256,
                   help="calibration images from the training split for openvino-int8 and litert-int8 (default 256)")
    return p


def quantize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab quantize", description=QUANTIZE_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="fp32 ONNX model (e.g. from slimlab export)")
    p.add_argument("--calib", metavar="PRESET_OR_DATA",
                   help="calibration and validation data: a preset, a built-in preset name or a data folder "
                        "(default: the dataset recorded in a model slimlab exported)")
    p.add_argument("--samples", type=int, default=256, help="calibration images from the training split (default 256)")
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                   help="how activation ranges are calibrated (default minmax)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales (default on; --no-per-channel for per-tensor)")
    p.add_argument("--activations", choices=["auto", "uint8", "int8"], default="auto",
                   help="activation type (auto: uint8 on x86, int8 on ARM)")
    p.add_argument("--max-drop", type=_max_drop, default=1.0, metavar="POINTS",
                   help="accuracy points INT8 may lose (default 1); 'none' turns the guard off")
    p.add_argument("--out", type=Path, help="INT8 file (default: MODEL.int8.onnx beside it)")
    return p


def _max_drop(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("points lost cannot be negative")
    return value


def main(cmd: str, argv: list[str]) -> int:
    if cmd == "export":
        return export(export_parser().parse_args(argv))
    return quantize(quantize_parser().parse_args(argv))


def _print(line: str) -> None:
    print(line, flush=True)


def export(args: argparse.Namespace) -> int:
    from engine.deploy import data as deploy_data
    from engine.deploy.artifacts import export_file, shape_text
    from engine.models.sizing import parse_batch, parse_input_size
    from engine.slim_cli import load

    batch = parse_batch(args.batch)
    shape = parse_input_size(args.input_size) if args.input_size else None
    loaded = load(args)
    if isinstance(loaded.arch, dict) and loaded.arch.get("task") == "detect":  # Ultralytics YOLO (engine/detect)
        from engine.detect.cli import export as export_detection

        return export_detection(args, loaded)
    if args.format != "onnx":
        raise PresetError(f"--format {args.format}: writes Ultralytics detection models (a classifier exports as onnx, "
                          f"then `slimlab quantize` for INT8); {args.checkpoint} holds a "
                          f"{loaded.arch.get('name')} classification model (export it with --format onnx)")
    images = None
    recorded = (loaded.meta.get("spec") or {}) if isinstance(loaded.meta, dict) else {}
    if args.data:
        spec, label = deploy_data.resolve(args.data, recorded=None, image_size=shape[1] if shape else None,
                                          what="validation data")
        images = deploy_data.from_spec(spec, label)
    elif isinstance(recorded.get("data"), dict):
        try:
            spec, label = deploy_data.resolve(None, recorded=recorded, image_size=None, what="validation data")
            images = deploy_data.from_spec(spec, label)
        except DeployError as e:
            _print(f"note: {e}; checking on random inputs instead (give --data for real images)")
    recorded_shape = loaded.arch.get("input_size") if isinstance(loaded.arch, dict) else None
    shape = shape or (tuple(recorded_shape) if recorded_shape else None) or (images.shape if images else _model_shape(loaded.model))
    if images is not None:
        images.check_fits(shape, f"{args.checkpoint} (input size {shape_text(shape)})",
                          _outputs(loaded.model, shape))
    out = args.out or args.checkpoint.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise PresetError(f"--out {out}: an ONNX file name ends in .onnx")
    _print(f"exporting {args.checkpoint} ({loaded.arch.get('name')}{', pruned' if loaded.plan else ''}) "
           f"for {shape_text(shape)} inputs, {'dynamic batch' if batch is None else f'batch {batch}'}, opset {args.opset}")
    meta = {**(loaded.meta if isinstance(loaded.meta, dict) else {}), "source": str(args.checkpoint)}
    record = export_file(
        loaded.model, out, input_shape=shape, images=images, batch=batch, opset=args.opset,
        class_names=list(images.bundle.class_names) if images else None, arch=loaded.arch, plan=loaded.plan,
        meta=meta, log=None,
    )
    _print(f"checked: onnxruntime reproduces PyTorch within {record['max_abs_diff']:.2g} on {record['checked_on']}")
    if record["accuracy"] is not None:
        _print(f"accuracy {record['accuracy']:.2%} on {images.label} validation images through onnxruntime")
    _print(f"wrote {out} ({record['size'] / 2**20:.2f} MiB, {record['params']:,} params, {record['flops']:,} FLOPs)")
    return 0


def _model_shape(model: Any) -> tuple[int, int, int]:
    shape = getattr(model, "input_size", None)
    if shape is None or len(shape) != 3:
        raise PresetError("the model's input size is unknown: give --input-size CxHxW (e.g. 3x32x32) or --data")
    return tuple(int(s) for s in shape)


def _outputs(model: Any, shape: tuple[int, int, int]) -> int | None:
    import torch

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except Exception as e:  # a model that cannot run on this input size: the exporter says why
        raise DeployError(f"the model does not run on {'x'.join(map(str, shape))} inputs: {type(e).__name__}: {e}") from None
    finally:
        model.train(was)
    out = out[0] if isinstance(out, list | tuple) else out
    return int(out.shape[-1]) if hasattr(out, "shape") and out.dim() == 2 else None


def quantize(args: argparse.Namespace) -> int:
    import tempfile

    from engine.deploy import onnxfile

    if args.samples < 1:
        raise PresetError("--samples must be at least 1")
    fp32 = onnxfile.read(args.model)
    info = onnxfile.describe(fp32, args.model, args.model.stat().st_size)
    if info.precision == "int8":
        raise DeployError(f"{args.model} is already quantized (INT8); give the fp32 model it came from")
    out = args.out or args.model.with_name(args.model.name.removesuffix(".onnx") + ".int8.onnx")
    if out.resolve() == args.model.resolve():
        raise PresetError(f"--out {out} is the input model; give another file name")
    from engine.detect.data import is_dataset_yaml
    from engine.task import ACCURACY, MAP

    calib_is_yolo = bool(args.calib) and is_dataset_yaml(Path(args.calib))
    with tempfile.TemporaryDirectory(prefix="slimlab-quantize-") as work:
        # slimlab's or Ultralytics' export of a detector, or a file without metadata given a YOLO dataset
        if info.metadata.get("task") == "detect" or (calib_is_yolo and not info.metadata):
            from engine.detect.cli import quantize_data

            (data, label), metric = quantize_data(args, info, Path(work)), MAP
        else:
            if calib_is_yolo:
                raise DeployError(f"--calib {args.calib} is a YOLO detection dataset but {args.model} is a "
                                  "classification model (its metadata says so); give the classifier's data "
                                  "(a preset or a data folder)")
            data, label = classification_data(args, info)
            metric = ACCURACY
        return run_quantize(args, fp32, info, data, label, metric, out)


def classification_data(args: argparse.Namespace, info: Any) -> tuple[Any, str]:
    """(QuantizeData, label) of a classifier's ONNX file from --calib or the data recorded in it."""
    from engine.deploy import data as deploy_data
    from engine.deploy.quantize import QuantizeData, accuracy_scorer

    recorded = info.metadata.get("slimlab.meta")
    spec, label = deploy_data.resolve(args.calib, recorded=recorded.get("spec") if isinstance(recorded, dict) else None,
                                      image_size=info.chw[1] if info.chw else None)
    mean, std = info.metadata.get("mean"), info.metadata.get("std")
    images = deploy_data.from_spec(spec, label, mean=mean if isinstance(mean, list) else None,
                                   std=std if isinstance(std, list) else None)
    images.check_fits(info.chw or images.shape, str(args.model), info.num_classes)
    return QuantizeData(images.calibration(args.samples), accuracy_scorer(images.val)), label


def run_quantize(args: argparse.Namespace, fp32: Any, info: Any, data: Any, label: str, metric: Any, out: Path) -> int:
    from engine.deploy.artifacts import write_int8
    from engine.deploy.quantize import QuantizeOptions
    from engine.deploy.quantize import quantize as quantize_model

    options = QuantizeOptions(samples=args.samples, method=args.method, per_channel=args.per_channel,
                              activations=args.activations, max_drop=args.max_drop)
    for note in data.notes:
        _print(f"note: {note}")
    used = sum(len(b) for b in data.calibration)
    _print(f"quantizing {args.model} to INT8: {used} calibration images from {label} ({args.method}, "
           f"{'per-channel' if args.per_channel else 'per-tensor'} weights)")
    result = quantize_model(fp32, data, options, log=lambda line: _print(f"  {line}"), metric=metric)
    if result.model is None:
        print(f"error: {result.message}; no INT8 file written", file=sys.stderr)
        return 1
    write_int8(result, info, out)
    drop = result.drop
    _print(f"{metric.label} through onnxruntime: fp32 {metric.format(result.fp32_accuracy)}, INT8 "
           f"{metric.format(result.accuracy)} ({'loses' if drop >= 0 else 'gains'} {abs(drop):.2f} points)")
    if result.excluded:
        _print(f"kept in fp32: {', '.join(result.excluded)}")
    _print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB, from {info.size / 2**20:.2f} MiB)")
    return 0
