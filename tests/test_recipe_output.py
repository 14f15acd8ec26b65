"""What a user reads about the recipe without running one: the sweep plot on a terminal, the s
hint, and the demo preset's recipe (s: auto, pruned-at-target selection, the scratch control)."""

from __future__ import annotations

import pytest

from engine.config import load_preset
from engine.errors import PresetError
from engine.progress import RichReporter

ROWS = [
    {"ratio": r, "accuracy": a, "params": p, "flops": p}
    for r, a, p in ((0.0, 0.9, 1000), (0.3, 0.85, 600), (0.6, 0.4, 250), (0.9, 0.1, 40))
]


def test_sweep_on_a_terminal_prints_a_plot_and_the_table(capsys):
    reporter = RichReporter()
    try:
        reporter.sweep_curve("sweep", ROWS)
    finally:
        reporter.close()
    out = capsys.readouterr().out
    assert "accuracy % without finetuning vs ratio of channels removed" in out  # the plotext plot
    assert "[sweep] ratio  accuracy" in out and "[sweep]  0.60    40.00%   50.00" in out


@pytest.mark.parametrize("s", [-1, 2, "strong"])
def test_a_bad_s_names_auto_and_how_s_scales(tiny_preset, s):
    with pytest.raises(PresetError) as e:
        load_preset(tiny_preset(stages=[{"type": "sparse", "s": s}, {"type": "prune", "percent": 0.5}]))
    text = str(e.value)
    assert "'auto'" in text and "1 / (epochs * lr)" in text and "1e-5" not in text


def test_demo_runs_s_auto_against_its_prune_target_and_ends_with_the_controls():
    spec = load_preset("demo")
    types = [s.type for s in spec.stages]
    sparse = spec.stages[types.index("sparse")]
    prune = spec.stages[types.index("prune")]
    assert sparse.s == "auto" and sparse.target is None and prune.percent == 0.5  # measured at the prune rule
    assert sparse.select in (None, "best")  # best by pruned-at-target accuracy
    trained = [t for t in types if t not in ("export", "quantize", "compress")]
    assert trained[-3:] == ["finetune", "scratch", "uniform"]  # the finetune and its two controls
    finetune = spec.stages[types.index("finetune")]
    assert finetune.rewind is True and finetune.training.lr is None  # the train stage's schedule, rewound
