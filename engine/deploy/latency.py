"""onnxruntime latency of several models measured side by side, so their ratios can be trusted.

Every session has the same fixed intra-op thread count. After warm-up, rounds alternate the
models (in a rotating order, so no model always runs first or right after another) and the
batch sizes; in each round a model runs `runs` times back to back and the round keeps the
fastest (a run the scheduler interrupted for another process is slower, never faster); each
model's latency is the median over the rounds. Load on the machine then hits all models alike
instead of whichever happened to run during it.

A model is an onnxruntime session or any `Runner` (another runtime: OpenVINO, ncnn, LiteRT; see
engine/detect/runtimes.py), each built with the same fixed thread count by its caller.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from engine.deploy import runtime

BATCHES = (1, 32)


class Runner(Protocol):
    """One model in its own runtime: `fixed_batch` (None: any) and a call on a float32 NCHW batch."""

    fixed_batch: int | None

    def __call__(self, x: np.ndarray) -> Any: ...


class _Session:
    """An onnxruntime session as a Runner."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.sess, self.feed = sess, runtime.input_name(sess)
        self.fixed_batch = runtime.fixed_batch(sess)

    def __call__(self, x: np.ndarray) -> Any:
        return self.sess.run(None, {self.feed: x})


def as_runner(model: ort.InferenceSession | Runner) -> Runner:
    return _Session(model) if isinstance(model, ort.InferenceSession) else model


def measure(
    sessions: dict[str, ort.InferenceSession | Runner],
    input_shape: Sequence[int],
    *,
    batches: Sequence[int] = BATCHES,
    warmup: int = 5,
    repeats: int = 30,
    runs: int = 3,
    seed: int = 0,
) -> dict[str, dict[int, float | None]]:
    """{name: {batch: median over `repeats` rounds of the best of `runs` runs, in milliseconds}};
    None where a model's fixed batch differs from `batch`."""
    rng = np.random.default_rng(seed)
    inputs = {b: rng.standard_normal((b, *input_shape)).astype(np.float32) for b in batches}
    runners = {name: as_runner(s) for name, s in sessions.items()}
    runnable = {name: [b for b in batches if r.fixed_batch in (None, b)] for name, r in runners.items()}
    for name, run in runners.items():
        for b in runnable[name]:
            for _ in range(warmup):
                run(inputs[b])
    samples: dict[tuple[str, int], list[float]] = {(n, b): [] for n in sessions for b in runnable[n]}
    names = list(sessions)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for b in batches:
            for name in order:
                if b not in runnable[name]:
                    continue
                run, x = runners[name], inputs[b]
                best = float("inf")
                for _ in range(max(1, runs)):
                    start = time.perf_counter()
                    run(x)
                    best = min(best, time.perf_counter() - start)
                samples[(name, b)].append(best)
    return {
        name: {b: (statistics.median(samples[(name, b)]) * 1e3 if (name, b) in samples else None) for b in batches}
        for name in names
    }
