"""onnxruntime sessions with fixed threads, and running image batches through them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.errors import DeployError

PROVIDERS = ["CPUExecutionProvider"]


def session(model: bytes | str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads (one inter-op thread, sequential execution).

    Fixed threads make latencies comparable between artifacts; onnxruntime's own log lines
    stay below error level.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=PROVIDERS)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        where = "the model" if isinstance(model, bytes) else str(model)
        raise DeployError(f"onnxruntime cannot load {where}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def input_name(sess: ort.InferenceSession) -> str:
    return sess.get_inputs()[0].name


def fixed_batch(sess: ort.InferenceSession) -> int | None:
    first = sess.get_inputs()[0].shape[0]
    return first if isinstance(first, int) else None


def predict(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The first output for batch `x`; a model with a fixed batch gets padded chunks."""
    name = input_name(sess)
    fixed = fixed_batch(sess)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if fixed is None or fixed == len(x):
        return _run(sess, name, x)
    parts = []
    for start in range(0, len(x), fixed):
        chunk = x[start : start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
        parts.append(_run(sess, name, chunk)[:n])
    return np.concatenate(parts)


def _run(sess: ort.InferenceSession, name: str, x: np.ndarray) -> np.ndarray:
    try:
        return sess.run(None, {name: x})[0]
    except Exception as e:
        raise DeployError(f"onnxruntime failed on a batch of shape {tuple(x.shape)}: {_first_line(e)}") from None


def accuracy(sess: ort.InferenceSession, batches: Iterable[tuple[Any, Any]]) -> float:
    """Top-1 accuracy (a fraction) over (images, labels) batches (torch tensors or arrays)."""
    correct = seen = 0
    for x, y in batches:
        logits = predict(sess, _numpy(x))
        labels = _numpy(y)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return correct / seen if seen else 0.0


def _numpy(t: Any) -> np.ndarray:
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)
