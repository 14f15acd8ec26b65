"""The accuracy guard: keep the layers INT8 hurts most in fp32 until the model is within budget.

The candidates are every conv/linear layer and the quantizable nodes between the last of them and
the outputs (a head's decoding: a detector's box arithmetic, the sigmoid of its class scores, the
concat that puts pixels and probabilities into one tensor). Sensitivity is measured by quantizing
one candidate at a time (every other node stays fp32) and comparing the outputs with the fp32
model's on calibration images (the task's comparison; by default the signal-to-quantization-noise
ratio, lower is worse); calibration ranges are computed once and reused. Then the worst k are
kept in fp32 (onnxruntime's `nodes_to_exclude`) for k = 1, 2, ... until the task's metric on the
val split (accuracy, mAP50-95) is within `max_drop` points. A model that meets the budget only
with every candidate in fp32 gains nothing from INT8: then, as when nothing meets it, no INT8
model is returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.deploy import runtime
from engine.task import ACCURACY, Metric


def schedule(n: int) -> list[int]:
    """How many layers to keep in fp32 on successive tries: one by one up to 8, then doubling, then all."""
    ks = list(range(1, min(n, 8) + 1))
    k = 16
    while k < n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def points(drop: float) -> str:
    """'loses 1.20 points' / 'gains 0.40 points' for an accuracy change in points."""
    return f"loses {drop:.2f} points" if drop >= 0 else f"gains {-drop:.2f} points"


def sqnr_db(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    signal = sum(float(np.square(r.astype(np.float64)).sum()) for r in reference)
    noise = sum(float(np.square(r.astype(np.float64) - g).sum()) for r, g in zip(reference, got, strict=True))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-30) / noise)


class Guard:
    def __init__(self, quantizer: Any, data: Any, fp32_accuracy: float, max_drop: float, *,
                 log: Callable[[str], None] | None = None,
                 progress: Callable[[float, str], None] | None = None, metric: Metric = ACCURACY) -> None:
        """`data` is the task's engine.deploy.quantize.QuantizeData: its scorer gives the metric
        (accuracy, mAP50-95) on the val split, its `compare` ranks layers (default: SQNR)."""
        self.q, self.data, self.fp32, self.max_drop = quantizer, data, fp32_accuracy, max_drop
        self.metric = metric
        self.compare = data.compare or sqnr_db
        self.log = log or (lambda line: None)
        self.progress = progress or (lambda f, text: None)
        self.figures: dict[str, float] = {}  # of the latest file scored

    def drop(self, accuracy: float) -> float:
        return (self.fp32 - accuracy) * 100

    def accuracy(self, path: Path) -> float:
        self.figures = self.data.score(path)
        return self.figures[self.metric.key]

    def attempt(self, ranking: list[tuple[str, str, float]], k: int, result: Any) -> tuple[Path, float, dict] | None:
        """The INT8 file with the `k` most sensitive nodes in fp32, when it meets the budget (else None);
        every attempt is logged and recorded in `result.attempts`."""
        path = self.q.quantize(exclude=[node for node, _, _ in ranking[:k]])
        acc = self.accuracy(path)
        result.attempts.append({"excluded": k, "accuracy": acc, **{key: v for key, v in self.figures.items()
                                                                    if key != "accuracy"}})
        self.log(f"quantize: with {k} layer(s) in fp32, INT8 {self.metric.named(acc)} ({points(self.drop(acc))})")
        if self.drop(acc) <= self.max_drop + 1e-9:
            return path, acc, dict(self.figures)
        return None

    def sensitivity(self, nodes: list[tuple[str, str]]) -> list[tuple[str, str, float]]:
        """(node, layer, how close the outputs stay in dB with only that node in INT8), worst first."""
        probe, count = [], 0
        for batch in self.q.calibration:
            probe.append(batch)
            count += len(batch)
            if count >= self.data.probe:
                break
        fp32 = runtime.session(self.q.pre)
        reference = [runtime.predict(fp32, x) for x in probe]
        scored = []
        for i, (node, layer) in enumerate(nodes):
            self.progress(0.3 + 0.3 * i / len(nodes), f"sensitivity of {layer}")
            sess = runtime.session(self.q.quantize(only=[node]))
            scored.append((node, layer, self.compare(reference, [runtime.predict(sess, x) for x in probe])))
        return sorted(scored, key=lambda t: t[2])

    def run(self, result: Any) -> Path | None:
        """The INT8 file within budget (result.excluded/accuracy/message filled in), or None."""
        first = result.accuracy
        compute, tail = self.q.compute_nodes(), self.q.tail_nodes()
        nodes = compute + tail
        m = self.metric
        self.log(f"quantize: INT8 {points(self.drop(first))} (fp32 {m.format(self.fp32)}, INT8 {m.format(first)}), "
                 f"more than max_drop {self.max_drop:g}; measuring the sensitivity of {len(compute)} conv/linear layers"
                 + (f" and {len(tail)} output nodes" if tail else ""))
        if not nodes:
            result.accuracy = None
            result.message = (f"INT8 loses {self.drop(first):.2f} points, more than max_drop {self.max_drop:g}, and "
                              "the model has no conv/linear layer to keep in fp32; keeping the fp32 model")
            return None
        ranking = self.sensitivity(nodes)
        self.log("quantize: most sensitive (outputs vs fp32 with only that one in INT8): "
                 + ", ".join(f"{layer} {db:.1f} dB" for _, layer, db in ranking[:8]))
        tries = schedule(len(ranking))
        failed = 0  # the most nodes kept in fp32 that did not meet the budget
        for j, k in enumerate(tries):
            self.progress(0.6 + 0.4 * j / len(tries), f"{k} layer(s) in fp32")
            found = self.attempt(ranking, k, result)
            if found is None:
                failed = k
                continue
            # the schedule doubles past 8: the fewest in between that still meet the budget, by bisection
            passed = k
            while passed - failed > 1:
                mid = (passed + failed) // 2
                again = self.attempt(ranking, mid, result)
                if again is None:
                    failed = mid
                else:
                    passed, found = mid, again
            path, acc, figures = found
            if passed == len(ranking):
                result.accuracy = None
                result.message = (f"INT8 stays within max_drop {self.max_drop:g} only with every conv/linear layer "
                                  f"{'and output node ' if tail else ''}in fp32, which leaves nothing to gain; "
                                  "keeping the fp32 model")
                return None
            result.accuracy = acc
            result.figures = figures
            result.excluded = [layer for _, layer, _ in ranking[:passed]]
            result.message = (f"kept {passed} of {len(ranking)} {'layers and output nodes' if tail else 'conv/linear layers'} "
                              f"in fp32 to stay within max_drop {self.max_drop:g}: {', '.join(result.excluded)}")
            return path
        best = max(a["accuracy"] for a in result.attempts)
        result.accuracy = None
        result.message = (f"max_drop {self.max_drop:g} cannot be reached: even with every conv/linear layer "
                          f"{'and output node ' if tail else ''}in fp32, "
                          f"INT8 loses {self.drop(result.attempts[-1]['accuracy']):.2f} points (best INT8 {m.named(best)} "
                          f"vs fp32 {m.format(self.fp32)}); keeping the fp32 model")
        return None
