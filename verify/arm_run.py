"""Runs inside the emulated arm64 Debian root (its own Python, the registry's aarch64 numpy and
onnxruntime wheels, nothing else): every ONNX file of the manifest on its images, outputs saved.

    python3 arm_run.py WORK   (WORK/manifest.json in, WORK/arm/<name>.npy out)
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> None:
    work = Path(sys.argv[1])
    manifest = json.loads((work / "manifest.json").read_text())
    out = work / "arm"
    out.mkdir(exist_ok=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    for name, entry in manifest["models"].items():
        sess = ort.InferenceSession(str(work / entry["file"]), opts, providers=["CPUExecutionProvider"])
        images = np.load(work / entry["images"])
        feed = sess.get_inputs()[0].name
        outputs = np.concatenate([sess.run(None, {feed: images[i:i + 8]})[0] for i in range(0, len(images), 8)])
        np.save(out / f"{name}.npy", outputs)
        print(f"arm: {name}: {entry['file']} on {len(images)} images -> {outputs.shape}", flush=True)
    (out / "host.json").write_text(json.dumps({"machine": platform.machine(), "onnxruntime": ort.__version__,
                                               "numpy": np.__version__, "python": platform.python_version()}))


if __name__ == "__main__":
    main()
