"""`make verify-arm`: the INT8 (and fp32) files slimlab writes, run on arm64 under emulation and compared
with x86 on the same images. Not part of `make test` or CI; emulated latency is not reported.

1. An arm64 Debian root built with Debian's own `debootstrap` (the first stage, `--foreign`: its second
   stage runs arm64 maintainer scripts, which needs the kernel's binfmt_misc, not mounted in these
   containers; the packages are unpacked with `dpkg-deb -x` instead, which is all that running Python
   needs). `qemu-aarch64-static` (Debian's qemu-user-static) runs its python3 directly, the root as the
   library prefix (`-L`), so no binfmt registration either. qemu-user shows the host's /proc/cpuinfo,
   which the pytorch cpuinfo inside onnxruntime cannot parse on arm64 (it crashes at import): the root
   carries an arm64 one (Neoverse N1, which has the dot-product instructions onnxruntime's int8 kernels
   use), and qemu serves files under the prefix first.
2. The registry's aarch64 onnxruntime (the same version as here) and numpy wheels, installed into the
   root by pip's cross-platform `--target` install.
3. The files of a detection run (a tiny YOLOv8 trained on generated shapes, exported, quantized with
   int8 activations: what `activations: auto` gives on ARM) and of a classification run (VGG-11 at
   1/8 width on shapes), run on the same images here and under emulation.
4. Compared, with stated tolerances (INT8 kernels differ across CPUs, so the decoded results are
   compared, not the bits). Detections are decoded by NMS (conf 0.25, IoU 0.7) and matched one to
   one, same class and IoU >= `MATCH_IOU`; a classifier's by top-1. fp32: outputs within
   `FP32_TOLERANCE` of their range and `FP32_AGREE` of the decoded results the same. INT8: at least
   `INT8_AGREE` agreement between the hosts, and the arm64 INT8 file no further from the arm64 fp32
   results than the x86 INT8 file from the x86 ones, less `FIDELITY_SLACK`: x86 CPUs without VNNI
   (these) run int8 activations through u8 x s8 multiply-adds that saturate, so x86 is the less
   faithful host for this file (slimlab quantizes for x86 with uint8 activations and reduce_range).

Exit 0: every comparison passed; 1: one failed; 2: blocked (a tool, the Debian mirror or the wheels
could not be had here), with the reason.

    .venv-detect/bin/python verify/arm.py [--root .arm/root] [--work .arm/work] [--mirror URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
FP32_TOLERANCE = 1e-3  # of the output's range (max - min over the images)
FP32_AGREE = 0.99  # fp32: decoded detections matched / top-1 the same across the two hosts
MATCH_IOU = 0.9  # a detection matches one of the same class with at least this IoU
INT8_AGREE = 0.90  # INT8: across the two hosts (their int8 kernels differ)
FIDELITY_SLACK = 0.02  # INT8 vs fp32 on arm64 may be this much below INT8 vs fp32 on x86
IMAGES = 32
ARM_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\n"
    "CPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    for i in range(2)
)
DONE = ".slimlab-root"


class Blocked(Exception):
    """This machine cannot run the check; the message says why."""


def say(line: str) -> None:
    print(f"verify-arm: {line}", flush=True)


def sh(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd`; Blocked with `what` and its last output line when it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise Blocked(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return done


# ---------------------------------------------------------------- the arm64 root


def tools() -> None:
    """debootstrap, dpkg-deb and qemu-aarch64-static, installed from Debian's packages when missing."""
    need = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static", "dpkg-deb": "dpkg"}
    missing = sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Blocked(f"{', '.join(missing)} not installed, and installing needs root and apt-get: "
                      f"apt-get install {' '.join(missing)}")
    say(f"installing {' '.join(missing)} with apt-get")
    sh(["apt-get", "update", "-qq"], "apt-get update")
    sh(["apt-get", "install", "-y", "-qq", *missing], f"apt-get install {' '.join(missing)}")


def qemu_python(root: Path) -> list[str]:
    return ["qemu-aarch64-static", "-L", str(root), "-E", f"PYTHONPATH={root / 'opt' / 'slimlab-arm'}",
            str(root / "usr" / "bin" / "python3")]


def build_root(root: Path, mirror: str) -> None:
    """The arm64 Debian root with python3, numpy and onnxruntime (kept: later runs reuse it)."""
    if (root / DONE).exists():
        say(f"arm64 root: {root} (built before)")
        return
    import onnxruntime

    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    say(f"arm64 root: debootstrap --foreign {SUITE} from {mirror} into {root} (a minute or two)")
    sh(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3", SUITE, str(root), mirror],
       f"debootstrap of Debian {SUITE} arm64 from {mirror}")
    debs = sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb"))
    for deb in debs:  # what the second stage would unpack; no maintainer script needs to run for Python
        sh(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
    pythons = sorted((root / "usr" / "bin").glob("python3.[0-9]*"))
    if not pythons:
        raise Blocked(f"the arm64 root has no python3 after unpacking {len(debs)} packages")
    version = pythons[0].name.removeprefix("python")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(ARM_CPUINFO)
    say(f"arm64 root: onnxruntime {onnxruntime.__version__} and numpy for aarch64 Python {version} from the registry")
    target = root / "opt" / "slimlab-arm"
    sh([sys.executable, "-m", "pip", "install", "--isolated", "-q", "--target", str(target),
        "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64", "--implementation", "cp",
        "--python-version", version, "--only-binary=:all:", f"onnxruntime=={onnxruntime.__version__}", "numpy"],
       "pip install of the aarch64 onnxruntime and numpy wheels")
    probe = sh([*qemu_python(root), "-c", "import platform, onnxruntime; print(platform.machine(), onnxruntime.__version__)"],
               "onnxruntime under qemu-aarch64")
    say(f"arm64 root: python3 under qemu says {probe.stdout.strip()}")
    (root / DONE).write_text(probe.stdout)


# ---------------------------------------------------------------- the files to compare


def detection_files(work: Path) -> dict[str, dict]:
    """A tiny YOLOv8 trained on generated shapes, its fp32 ONNX file and INT8 with int8 activations."""
    import numpy as np

    from engine.detect import data as ydata
    from engine.detect.deploy import check_images

    run = pipeline_run(work, "arm-detect", {
        "task": "detect", "model": {"arch": "ultralytics:yolov8n.yaml", "kwargs": {"width": 0.25}},
        "data": {"dataset": "yolo_shapes", "num_classes": 2, "train_size": 256, "val_size": 32, "image_size": 64,
                 "augment": False},
        "training": {"epochs": 12, "batch_size": 16, "optimizer": "adamw", "lr": 0.004, "log_every": 50,
                     "device": "cpu", "warmup_epochs": 1},
        "stages": [{"type": "train"}, {"type": "export", "original": False},
                   {"type": "quantize", "samples": 64, "activations": "int8", "max_drop": 1.0}],
    })
    if not (run / "quantize.int8.onnx").exists():
        raise Blocked(f"{run}: the quantize stage kept fp32 (no INT8 within 1 point of mAP50-95): see its log.txt")
    data = ydata.load(run / "data" / "data.yaml")
    np.save(work / "detect_images.npy", check_images(data, 64, IMAGES).numpy())
    return {"detect_fp32": {"file": str(run / "export.onnx"), "images": "detect_images.npy", "kind": "detect"},
            "detect_int8": {"file": str(run / "quantize.int8.onnx"), "images": "detect_images.npy", "kind": "detect"}}


def classification_files(work: Path) -> dict[str, dict]:
    """VGG-11 at 1/8 width trained on shapes, its fp32 ONNX file and INT8 with int8 activations."""
    import numpy as np

    from engine.config import load_preset
    from engine.deploy import data as deploy_data
    from engine.deploy import onnxfile

    run = pipeline_run(work, "arm-classify", {
        "model": {"arch": "vgg", "kwargs": {"depth": 11, "width": 0.125}},
        "data": {"dataset": "shapes", "num_classes": 4, "train_size": 512, "val_size": 128, "augment": False},
        "training": {"epochs": 4, "batch_size": 32, "lr": 0.05, "log_every": 10, "device": "cpu"},
        "stages": [{"type": "train"}, {"type": "export", "original": False},
                   {"type": "quantize", "samples": 128, "activations": "int8", "max_drop": None}],
    })
    meta = onnxfile.peek(run / "export.onnx").metadata
    images = deploy_data.from_spec(load_preset(run / "spec.yaml").data, "shapes", mean=meta.get("mean"),
                                   std=meta.get("std"))
    np.save(work / "classify_images.npy", images.check_batch(IMAGES * 2).numpy())
    return {"classify_fp32": {"file": str(run / "export.onnx"), "images": "classify_images.npy", "kind": "classify"},
            "classify_int8": {"file": str(run / "quantize.int8.onnx"), "images": "classify_images.npy",
                              "kind": "classify"}}


def pipeline_run(work: Path, name: str, preset: dict) -> Path:
    """A finished run directory of `preset` under `work` (reused when an earlier call finished it)."""
    from engine.cli import prepare_run_dir
    from engine.config import spec_from_dict
    from engine.pipeline import Pipeline

    path = work / name
    if (path / "summary.json").exists() and "comparison" in json.loads((path / "summary.json").read_text()):
        return path
    if path.exists():
        shutil.rmtree(path)
    spec = spec_from_dict({"name": name, "latency": {"repeats": 3, "warmup": 1, "runs": 1}, **preset},
                          source="verify-arm")
    path.mkdir(parents=True)
    prepare_run_dir(path, spec)
    say(f"{name}: training and exporting (a minute or two)")
    Pipeline(spec, path).run()
    return path


# ---------------------------------------------------------------- comparing


def x86_outputs(work: Path, models: dict[str, dict]):
    import numpy as np

    from engine.deploy import runtime

    out = {}
    for name, entry in models.items():
        sess = runtime.session(Path(entry["file"]), 1)
        out[name] = runtime.predict(sess, np.load(work / entry["images"]))
    return out


def detections(output, conf: float = 0.25, iou: float = 0.7) -> list:
    import torch

    from engine.detect import ultra

    ultra.load()
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(torch.from_numpy(output), conf_thres=conf, iou_thres=iou)


def detections_agree(x86, arm) -> tuple[float, int]:
    """(fraction of detections matched one to one across the two hosts, detections compared)."""
    from ultralytics.utils.metrics import box_iou

    matched = total = 0
    for a, b in zip(detections(x86), detections(arm), strict=True):
        total += max(len(a), len(b))
        if not len(a) or not len(b):
            continue
        iou = box_iou(a[:, :4], b[:, :4])
        iou[a[:, 5][:, None] != b[:, 5][None, :]] = 0  # another class is no match
        used: set[int] = set()
        for i in iou.max(1).values.argsort(descending=True).tolist():
            j = int(iou[i].argmax())
            if iou[i, j] >= MATCH_IOU and j not in used:
                used.add(j)
                matched += 1
    return (matched / total if total else 1.0), total


def agreement(kind: str, a, b) -> tuple[float, str]:
    """(agreement, what it counts) of two outputs of the same images: decoded detections or top-1."""
    if kind == "detect":
        agree, n = detections_agree(a, b)
        return agree, f"of {n} detections"
    return float((a.argmax(1) == b.argmax(1)).mean()), f"top-1 on {len(a)} images"


def compare(models: dict[str, dict], x86: dict, arm: dict) -> list[tuple[str, str, bool]]:
    """(file, what was compared, passed) per model: fp32 within FP32_TOLERANCE and the same decoded
    results; INT8 agreeing across hosts (INT8_AGREE) and, against its own host's fp32, not further
    from it on arm64 than on x86 (FIDELITY_SLACK)."""
    import numpy as np

    results = []
    for name, entry in models.items():
        a, b = x86[name], arm[name]
        if a.shape != b.shape:
            results.append((name, f"output shapes differ: x86 {a.shape}, arm64 {b.shape}", False))
            continue
        kind = entry["kind"]
        span = float(a.max() - a.min()) or 1.0
        rel = float(np.abs(a - b).max()) / span
        agree, counted = agreement(kind, a, b)
        if not name.endswith("int8"):
            ok = rel <= FP32_TOLERANCE and agree >= FP32_AGREE
            results.append((name, f"max |diff| {rel:.2e} of the output range (<= {FP32_TOLERANCE:g}); {agree:.1%} "
                                  f"{counted} agree (>= {FP32_AGREE:.0%})", ok))
            continue
        ref = name.removesuffix("int8") + "fp32"
        on_x86, _ = agreement(kind, x86[ref], a)
        on_arm, _ = agreement(kind, arm[ref], b)
        ok = agree >= INT8_AGREE and on_arm >= on_x86 - FIDELITY_SLACK
        results.append((name, f"x86 and arm64 agree on {agree:.1%} {counted} (>= {INT8_AGREE:.0%}); INT8 vs fp32 on "
                              f"the same host: arm64 {on_arm:.1%}, x86 {on_x86:.1%} (arm64 at most "
                              f"{FIDELITY_SLACK:.0%} below); max |diff| x86 vs arm64 {rel:.2e} of the range", ok))
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path(".arm/root"), help="the arm64 Debian root (kept between runs)")
    p.add_argument("--work", type=Path, default=Path(".arm/work"), help="runs, images and outputs")
    p.add_argument("--mirror", default=os.environ.get("DEBIAN_MIRROR", MIRROR), help="the Debian mirror")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root, work = args.root.resolve(), args.work.resolve()
    try:
        tools()
        build_root(root, args.mirror)
    except Blocked as e:
        say(f"blocked: {e}")
        return 2
    work.mkdir(parents=True, exist_ok=True)
    try:
        models = {**detection_files(work), **classification_files(work)}
    except Blocked as e:
        say(f"blocked: {e}")
        return 2
    for entry in models.values():
        shutil.copy(entry["file"], work / f"{Path(entry['file']).parent.name}-{Path(entry['file']).name}")
        entry["file"] = str(work / f"{Path(entry['file']).parent.name}-{Path(entry['file']).name}")
    (work / "manifest.json").write_text(json.dumps({"models": {
        n: {**e, "file": Path(e["file"]).name} for n, e in models.items()}}, indent=2))
    say("running the files under qemu-aarch64 (emulated: no latency is reported)")
    try:
        done = sh([*qemu_python(root), str(Path(__file__).with_name("arm_run.py")), str(work)],
                  "the arm64 run under qemu-aarch64")
    except Blocked as e:
        say(f"blocked: {e}")
        return 2
    print(done.stdout, end="", flush=True)
    import numpy as np

    arm = {name: np.load(work / "arm" / f"{name}.npy") for name in models}
    host = json.loads((work / "arm" / "host.json").read_text())
    results = compare(models, x86_outputs(work, models), arm)
    say(f"x86_64 vs {host['machine']} (onnxruntime {host['onnxruntime']}, Python {host['python']}, emulated)")
    for name, what, ok in results:
        say(f"  {'ok  ' if ok else 'FAIL'} {name}: {what}")
    passed = all(ok for _, _, ok in results)
    say("passed" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
