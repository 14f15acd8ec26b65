"""The runtimes people deploy YOLO with, beside onnxruntime: OpenVINO (fp32, and INT8 through NNCF),
ncnn, and LiteRT (INT8), each written by Ultralytics' own exporter from the plain DetectionModel.

Each format is exported only where it works offline here: its Python packages are installed (the
`deploy-detect` extra, `make setup-detect`; LiteRT's own extra, `make setup-litert`) and nothing is
fetched (Ultralytics' font download on the INT8 calibration path is closed in engine/detect/ultra.py).
A format whose packages are missing is refused before anything is written, with the reason.

INT8 formats calibrate on the first `samples` training images, the same ones, letterboxed the same way,
as the onnxruntime INT8 file (engine/detect/deploy.py `calibration_batches`). Each artifact's mAP is
measured by Ultralytics' DetectionValidator running it through Ultralytics' own backend for the format
(AutoBackend), on the val split letterboxed to the artifact's square size, as for the ONNX files.
Latency is timed in the format's own runtime with a fixed thread count (`runner`), interleaved with
the other files by engine/deploy/latency.py. ncnn takes one image at a time (a batch runs image by
image, as Ultralytics' backend does), and so does a LiteRT file, exported at batch 1.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.detect.formats import (
    FORMATS,
    NAMES,
    Format,
    artifact_name,
    get,
    refuse_unavailable,
    unavailable,
)
from engine.errors import DeployError

__all__ = ["FORMATS", "NAMES", "Format", "artifact_name", "backend_map", "export", "get", "refuse_unavailable",
           "runner", "size_of", "unavailable"]


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file in an artifact folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------- export


def export(
    model: nn.Module,
    name: str,
    out: Path,
    *,
    data: Any,
    imgsz: int,
    samples: int = 256,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write `model` (a DetectionModel) as format `name` to `out` (a folder, or a .tflite file), its
    mAP measured by Ultralytics' validator through the format's backend; the artifact record.

    Nothing is left at `out` when the exporter fails (its message, shortened, in a DeployError)."""
    from engine import measure
    from engine.detect.deploy import inference_form, save_ultralytics

    fmt = get(name)
    refuse_unavailable([name], f"format {name}")
    say = log or (lambda line: None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as tmp:
        work = Path(tmp)
        pt = work / "model.pt"
        save_ultralytics(model, pt, imgsz=imgsz)
        kwargs: dict[str, Any] = {"dynamic": fmt.exporter == "openvino"}  # OpenVINO takes any batch
        if fmt.int8:
            used = calibration_yaml(data, work, samples)
            kwargs.update(quantize=8, data=str(work / "calibration.yaml"), batch=1)
            say(f"{name}: INT8 calibration on the first {used} training images (letterboxed to {imgsz} px)")
        args = (pt, name, imgsz, kwargs, work, out, data)
        try:
            figures = _in_child(name, convert, *args) if fmt.isolated else convert(*args)
        except DeployError:
            if out.exists():  # moved there before its validation failed
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            raise
    deployed = inference_form(model)
    shape = (3, imgsz, imgsz)
    return {
        "name": out.name, "file": out.name, "format": f"{fmt.runtime} {fmt.precision}", "runtime": fmt.runtime,
        "dtype": fmt.precision, "export_format": name, **figures, "params": measure.count_params(deployed),
        "flops": measure.count_flops(deployed, shape), "size": size_of(out), "imgsz": imgsz,
        "input_shape": list(shape),
    }


def convert(pt: Path, name: str, imgsz: int, kwargs: dict[str, Any], work: Path, out: Path,
            data: Any) -> dict[str, float]:
    """Ultralytics' exporter on the saved model `pt`, its artifact moved to `out`, then the artifact's
    mAP through its own backend (none without `data`)."""
    written = Path(_run_exporter(pt, get(name), imgsz, kwargs, work))
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(written, out)
    return backend_map(out, data, imgsz, out.parent / "ultralytics" / out.name) if data is not None else {}


def _in_child(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a spawned process: its exception comes back as raised, a crash as a DeployError."""
    ctx = multiprocessing.get_context("spawn")  # a fork would inherit this process's threads and runtimes
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise DeployError(f"the {name} export crashed in its converter or runtime (the process died); "
                              "nothing written") from None


def calibration_yaml(data: Any, work: Path, samples: int) -> int:
    """A dataset yaml in `work` whose val split lists the first `samples` training images, in the order
    (sorted) that the onnxruntime INT8 path calibrates on: Ultralytics' exporters calibrate on `val`."""
    import yaml

    from engine.detect.deploy import letterboxed

    files = list(letterboxed(data, "train", 32, samples).im_files)[:samples]
    if not files:
        raise DeployError(f"{data.yaml_path}: the training split has no images to calibrate INT8 on")
    listing = work / "calibration.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    names = dict(enumerate(data.names))
    (work / "calibration.yaml").write_text(yaml.safe_dump(
        {"path": str(work), "train": str(listing), "val": str(listing), "nc": len(names), "names": names}))
    return len(files)


def _run_exporter(pt: Path, fmt: Format, imgsz: int, kwargs: dict[str, Any], work: Path) -> str:
    """Ultralytics' exporter on `pt`, its chatter (pnnx and NNCF print from native code) kept out of
    the terminal; DeployError with its own message when it fails."""
    from engine.detect import ultra
    from engine.detect.model import quiet

    ultra.load()
    from ultralytics import YOLO

    with native_output(work / "exporter.log") as transcript, quiet():
        try:
            written = YOLO(str(pt), task="detect").export(format=fmt.exporter, imgsz=imgsz, device="cpu",
                                                          verbose=False, **kwargs)
        except Exception as e:  # the exporters raise whatever their converter raised
            raise DeployError(f"the {fmt.name} export failed: {_short(e)}{_tail(transcript)}") from None
    if not written or not Path(written).exists():
        raise DeployError(f"the {fmt.name} export wrote nothing{_tail(transcript)}")
    return str(written)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:300] if text else "") or type(e).__name__


def _tail(transcript: Path) -> str:
    try:
        lines = [ln for ln in transcript.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f" (its last output: {lines[-1][:200]})" if lines else ""


@contextlib.contextmanager
def native_output(path: Path) -> Iterator[Path]:
    """Send what native code prints on stdout and stderr (file descriptors 1 and 2) to `path`."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield path
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


# ---------------------------------------------------------------- mAP through Ultralytics' backend


class BackendDetector(nn.Module):
    """An exported artifact behind what Ultralytics' validator calls, run by Ultralytics' AutoBackend."""

    def __init__(self, path: Path, names: dict[int, str]) -> None:
        super().__init__()
        from engine.detect import ultra
        from engine.detect.model import quiet

        ultra.load()
        from ultralytics.nn.autobackend import AutoBackend

        with quiet():
            self.backend = AutoBackend(str(path), device=torch.device("cpu"), fuse=False, verbose=False)
        self.names = names

    def forward(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        y = self.backend(x.detach().cpu().float())
        return y[0] if isinstance(y, list | tuple) else y

    def loss(self, batch: dict, preds: Any) -> tuple[None, dict[str, torch.Tensor]]:
        """No training loss through an exported file: the validator's loss terms stay zero."""
        zero = torch.zeros(())
        return None, {"box_loss": zero, "cls_loss": zero, "dfl_loss": zero}


def backend_map(path: Path, data: Any, imgsz: int, work_dir: Path, *, batch: int = 16) -> dict[str, float]:
    """precision, recall, mAP50, mAP50-95 of an artifact on the val split through its own backend."""
    from engine.detect.evaluate import Evaluator

    evaluator = Evaluator(data, imgsz=imgsz, batch=batch, device=torch.device("cpu"), work_dir=work_dir, rect=False)
    figures = evaluator.run(BackendDetector(path, dict(enumerate(data.names))))
    return {k: v for k, v in figures.items() if not k.startswith("val_")}


# ---------------------------------------------------------------- latency in each runtime


def runner(path: Path, runtime: str, threads: int) -> Any:
    """A latency Runner (engine/deploy/latency.py) of an artifact in its own runtime, `threads` threads."""
    if runtime == "openvino":
        return OpenVinoRunner(path, threads)
    if runtime == "ncnn":
        return NcnnRunner(path, threads)
    if runtime == "litert":
        return LiteRtRunner(path, threads)
    raise DeployError(f"{path}: no runtime {runtime!r} to time it with")


class OpenVinoRunner:
    """OpenVINO on the CPU: `threads` inference threads, one stream, fp32 where the file is fp32 (no
    bf16/fp16 downcast on CPUs that have it)."""

    fixed_batch = None

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        xml = next(Path(path).glob("*.xml"))
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": ov.Type.f32}
        self.request = ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()

    def __call__(self, x: np.ndarray) -> Any:
        return self.request.infer({0: x})


class NcnnRunner:
    """ncnn on the CPU with `threads` threads (no Vulkan); it takes one image at a time."""

    fixed_batch = None

    def __init__(self, path: Path, threads: int) -> None:
        import ncnn

        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        param = next(Path(path).glob("*.param"))
        self.net.load_param(str(param))
        self.net.load_model(str(param.with_suffix(".bin")))
        self.input, self.outputs = self.net.input_names()[0], sorted(self.net.output_names())

    def __call__(self, x: np.ndarray) -> Any:
        out = []
        for image in x:
            with self.net.create_extractor() as ex:
                ex.input(self.input, self.ncnn.Mat(np.ascontiguousarray(image)))
                out.append([np.array(ex.extract(name)[1]) for name in self.outputs])
        return out


class LiteRtRunner:
    """The LiteRT interpreter (XNNPACK) with `threads` threads; a batch-1 file runs a batch image by image."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])
        self.fixed_batch = None if self.batch == 1 else self.batch
        self.nhwc = int(self.input["shape"][-1]) == 3

    def __call__(self, x: np.ndarray) -> Any:
        if self.nhwc:
            x = x.transpose(0, 2, 3, 1)
        out = []
        for start in range(0, len(x), self.batch):
            self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x[start:start + self.batch]))
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self.output["index"]))
        return out
