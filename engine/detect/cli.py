"""`slimlab export` and `slimlab quantize` of detection models.

export: a checked ONNX file with its mAP, or an Ultralytics .pt, from a detection checkpoint. The
validation images come from `--data` (an Ultralytics dataset yaml), else from the dataset the
checkpoint was trained on: the `data.yaml` its preset names, or the generated data in its run
directory. Without either the ONNX check runs on random inputs and says so. `--format openvino`,
`openvino-int8`, `ncnn` or `litert-int8`: Ultralytics' exporter for that runtime, where its packages
are installed, with the mAP through it (INT8 formats calibrate on the data's training images).

quantize: the calibration images and mAP scorer of a detection ONNX file (slimlab's, or one
Ultralytics exported: both carry task, image size and class names), from `--calib DATA.yaml` or the
dataset recorded in the file; engine/deploy/cli.py runs the quantizer with them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import PresetError


def _print(line: str) -> None:
    print(line, flush=True)


def image_size(args: argparse.Namespace, model: Any) -> int:
    """The square input side: --input-size (3xSxS) or the size the model was trained at."""
    if args.input_size:
        from engine.models.sizing import parse_input_size

        c, h, w = parse_input_size(args.input_size)
        if h != w or h % 32:
            raise PresetError(f"--input-size {args.input_size}: a detection model takes square inputs whose side is a "
                              "multiple of 32 (e.g. 3x640x640)")
        return h
    return int(getattr(model, "input_size", (3, 640, 640))[1])


def recorded_data(spec: Any, run_dir: Path) -> Path | None:
    """The dataset yaml a run's spec names: its `data.path`, or the generated data inside `run_dir`."""
    data = spec.get("data") if isinstance(spec, dict) and isinstance(spec.get("data"), dict) else {}
    candidates = []
    if data.get("dataset") == "yolo" and data.get("path"):
        candidates.append(Path(str(data["path"])))
    if data.get("dataset") == "yolo_shapes":  # generated into its run directory
        candidates.append(run_dir / "data" / "data.yaml")
    return next((p for p in candidates if p.exists()), None)


def find_data(args: argparse.Namespace, loaded: Any) -> Any:
    """The YoloData to check and measure on, or None (a note says so)."""
    from engine.detect import data as ydata

    if args.data:
        return ydata.load(Path(args.data))
    spec = (loaded.meta.get("spec") or {}) if isinstance(loaded.meta, dict) else {}
    found = recorded_data(spec, Path(args.checkpoint).resolve().parent.parent)  # <run>/weights/<stage>.pt
    if found is not None:
        return ydata.load(found)
    _print("note: no validation data found for this checkpoint; the ONNX check uses random inputs "
           "(give --data DATA.yaml for real images and mAP)")
    return None


def quantize_data(args: argparse.Namespace, info: Any, work_dir: Path) -> tuple[Any, str]:
    """(QuantizeData, label of the data) for a detection ONNX file: `--calib DATA.yaml`, else the dataset
    its slimlab metadata records (a run's ONNX files sit at the top of the run directory)."""
    from engine.deploy.quantize import QuantizeData
    from engine.detect import data as ydata
    from engine.detect import ultra
    from engine.detect.deploy import (
        calibration_batches,
        check_detection_file,
        detection_sqnr,
        onnx_scorer,
        probe_images,
    )
    from engine.detect.evaluate import family_options
    from engine.errors import DeployError

    ultra.load()
    if args.calib:
        if not ydata.is_dataset_yaml(Path(args.calib)):
            raise DeployError(f"{args.model} is a detection model: --calib takes the Ultralytics dataset yaml it was "
                              f"trained on (train/val images and names), and {args.calib} is not one")
        yaml_path = Path(args.calib)
    else:
        meta = info.metadata.get("slimlab.meta")
        yaml_path = recorded_data(meta.get("spec") if isinstance(meta, dict) else None, Path(args.model).resolve().parent)
        if yaml_path is None:
            raise DeployError(f"{args.model}: no dataset is recorded in it (or it is gone); give the images to "
                              "calibrate and measure on with --calib DATA.yaml (an Ultralytics dataset yaml)")
    data = ydata.load(yaml_path)
    imgsz = check_detection_file(info, str(args.model), data.nc, unlabelled=not info.metadata)
    out = info.output_shape
    if len(out) == 3 and isinstance(out[1], int) and out[1] != 4 + data.nc:
        raise DeployError(f"{args.model}: its output has {out[1]} rows per anchor, not 4 box coordinates + "
                          f"{data.nc} classes of {yaml_path}; use the data it was trained on")
    batches, available = calibration_batches(data, imgsz, args.samples)
    notes = [] if available >= args.samples else [
        f"the training split has {available} images, fewer than --samples {args.samples}: calibrating on all of them"]
    score = onnx_scorer(data, imgsz, work_dir, options=family_options(info.metadata.get("slimlab.arch")))
    return QuantizeData(batches, score, compare=detection_sqnr, probe=probe_images(imgsz), notes=notes), str(yaml_path)


def export_runtime(args: argparse.Namespace, loaded: Any, imgsz: int, label: str) -> int:
    """--format openvino | openvino-int8 | ncnn | litert-int8: Ultralytics' exporter, then the mAP
    through that runtime (engine/detect/runtimes.py)."""
    from engine.detect import formats
    from engine.errors import DeployError

    fmt = formats.get(args.format)
    formats.refuse_unavailable([fmt.name], f"--format {fmt.name}")
    if args.samples < 1:
        raise PresetError("--samples must be at least 1")
    checkpoint = Path(args.checkpoint)
    out = args.out or checkpoint.with_name(formats.artifact_name(checkpoint.stem, fmt.name))
    if out.resolve() == checkpoint.resolve():
        raise PresetError(f"--out {out}: is the checkpoint being exported; give another name")
    if fmt.suffix.endswith(".tflite") and out.suffix != ".tflite":
        raise PresetError(f"--out {out}: a LiteRT file name ends in .tflite")
    data = find_data(args, loaded)
    if data is None and fmt.int8:
        raise DeployError(f"--format {fmt.name} calibrates INT8 on training images: give --data DATA.yaml (an "
                          "Ultralytics dataset yaml)")
    from engine.detect import runtimes

    _print(f"exporting {label} for 3x{imgsz}x{imgsz} inputs as {fmt.name} with Ultralytics' exporter")
    record = runtimes.export(loaded.model, fmt.name, out, data=data, imgsz=imgsz, samples=args.samples,
                             log=lambda line: _print(f"  {line}"))
    if record.get("mAP50_95") is not None:
        _print(f"mAP50 {record['mAP50']:.4f}, mAP50-95 {record['mAP50_95']:.4f} on {data.yaml_path} validation images "
               f"through Ultralytics' {fmt.runtime} backend")
    _print(f"wrote {out} ({record['size'] / 2**20:.2f} MiB, {fmt.runtime} {fmt.precision})")
    return 0


def export(args: argparse.Namespace, loaded: Any) -> int:
    from engine.detect import deploy, ultra

    ultra.load()
    imgsz = image_size(args, loaded.model)
    meta = {**(loaded.meta if isinstance(loaded.meta, dict) else {}), "source": str(args.checkpoint)}
    label = f"{args.checkpoint} ({loaded.arch.get('name')}{', pruned' if loaded.plan else ''})"
    family = loaded.arch.get("family") if isinstance(loaded.arch, dict) else None
    if args.format == "yolov5" or (family == "yolov5" and args.format in ("ultralytics", *_runtime_formats())):
        return export_yolov5(args, loaded, imgsz, meta, label, family)
    if args.format == "ultralytics":
        out = args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}.ultralytics.pt")
        if out.suffix != ".pt":
            raise PresetError(f"--out {out}: an Ultralytics checkpoint name ends in .pt")
        if out.resolve() == Path(args.checkpoint).resolve():
            raise PresetError(f"--out {out}: is the checkpoint being exported; give another file name")
        data = Path(args.data).resolve() if args.data else None
        size = deploy.save_ultralytics(loaded.model, out, imgsz=imgsz, data=data, meta=meta)
        _print(f"wrote {out} ({size / 2**20:.2f} MiB) from {label}: an Ultralytics checkpoint (a pickle), for "
               f"`yolo predict model={out}` or YOLO('{out}')")
        return 0
    from engine.detect import formats

    if args.format in formats.FORMATS:
        return export_runtime(args, loaded, imgsz, label)
    from engine.models.sizing import parse_batch

    batch = parse_batch(args.batch)
    out = args.out or args.checkpoint.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise PresetError(f"--out {out}: an ONNX file name ends in .onnx")
    data = find_data(args, loaded)
    _print(f"exporting {label} for 3x{imgsz}x{imgsz} inputs, {'dynamic batch' if batch is None else f'batch {batch}'}, "
           f"opset {args.opset}")
    with tempfile.TemporaryDirectory(prefix="slimlab-val-") as work:  # the validator's scratch files
        record = deploy.export_onnx(loaded.model, out, data=data, imgsz=imgsz, batch=batch, opset=args.opset,
                                    arch=loaded.arch, plan=loaded.plan, meta=meta, work_dir=Path(work))
    _print(f"checked: onnxruntime reproduces PyTorch (max |difference| {record['max_abs_diff']:.2g}) on {record['checked_on']}")
    if record.get("mAP50_95") is not None:
        _print(f"mAP50 {record['mAP50']:.4f}, mAP50-95 {record['mAP50_95']:.4f} on {data.yaml_path} validation images "
               "through onnxruntime")
    _print(f"wrote {out} ({record['size'] / 2**20:.2f} MiB, {record['params']:,} params, {record['flops']:,} FLOPs)")
    return 0


def _runtime_formats() -> tuple[str, ...]:
    from engine.detect import formats

    return tuple(formats.FORMATS)


def export_yolov5(args: argparse.Namespace, loaded: Any, imgsz: int, meta: dict, label: str, family: str | None) -> int:
    """--format yolov5: a yolov5: model written as the YOLOv5 repository saves a best.pt (a pickle of
    its classes under their repository names), for its val.py / detect.py and the PyPI package."""
    if family != "yolov5":
        raise PresetError(f"--format yolov5: {label} is an Ultralytics model; --format yolov5 writes models of the "
                          "YOLOv5 family (yolov5: archs, YOLOv5-repository checkpoints): export this one with "
                          "--format ultralytics")
    if args.format != "yolov5":
        raise PresetError(f"--format {args.format}: writes Ultralytics models; {label} is a YOLOv5-repository model: "
                          "export it with --format onnx (then slimlab quantize for INT8) or --format yolov5")
    from engine.detect.yolov5.checkpoint import save_repository

    out = args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}.yolov5.pt")
    if out.suffix != ".pt":
        raise PresetError(f"--out {out}: a YOLOv5 checkpoint name ends in .pt")
    if out.resolve() == Path(args.checkpoint).resolve():
        raise PresetError(f"--out {out}: is the checkpoint being exported; give another file name")
    size = save_repository(loaded.model, out, imgsz=imgsz, meta=meta, plan=loaded.plan)
    _print(f"wrote {out} ({size / 2**20:.2f} MiB) from {label}: a YOLOv5-repository checkpoint (a pickle), for "
           f"the repository's `python val.py --weights {out}` / `detect.py`, or the yolov5 package")
    return 0
