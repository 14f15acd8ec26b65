"""onnxruntime latency of several models measured side by side, so their ratios can be trusted.

Every session has the same fixed intra-op thread count. After warm-up, rounds alternate the
models (in a rotating order, so no model always runs first or right after another) and the
batch sizes; in each round a model runs `runs` times back to back and the round keeps the
fastest (a run the scheduler interrupted for another process is slower, never faster); each
model's latency is the median over the rounds. Load on the machine then hits all models alike
instead of whichever happened to run during it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from engine.deploy import runtime

BATCHES = (1, 32)


def measure(
    sessions: dict[str, ort.InferenceSession],
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
    runnable = {
        name: [b for b in batches if runtime.fixed_batch(s) in (None, b)] for name, s in sessions.items()
    }
    feeds = {name: runtime.input_name(s) for name, s in sessions.items()}
    for name, sess in sessions.items():
        for b in runnable[name]:
            for _ in range(warmup):
                sess.run(None, {feeds[name]: inputs[b]})
    samples: dict[tuple[str, int], list[float]] = {(n, b): [] for n in sessions for b in runnable[n]}
    names = list(sessions)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for b in batches:
            for name in order:
                if b not in runnable[name]:
                    continue
                sess, feed = sessions[name], {feeds[name]: inputs[b]}
                best = float("inf")
                for _ in range(max(1, runs)):
                    start = time.perf_counter()
                    sess.run(None, feed)
                    best = min(best, time.perf_counter() - start)
                samples[(name, b)].append(best)
    return {
        name: {b: (statistics.median(samples[(name, b)]) * 1e3 if (name, b) in samples else None) for b in batches}
        for name in names
    }
