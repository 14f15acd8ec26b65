"""The small pieces of deployment: k-means, the compressed file, the guard's schedule, interleaved
latency, the headless table and the exporter's chatter going to the log."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from engine.deploy import compress, compressed, latency, runtime, table
from engine.deploy.export import export
from engine.deploy.guard import schedule, sqnr_db
from engine.deploy.kmeans import kmeans_1d
from engine.deploy.onnxfile import serialize
from engine.deploy.quiet import quiet
from engine.errors import DeployError


def test_kmeans_finds_clusters_and_keeps_few_values_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(c, 0.01, 200) for c in (-1.0, 0.2, 3.0)])
    centroids, codes = kmeans_1d(values, 4)
    assert codes.dtype == np.uint8 and codes.max() < 4
    assert np.abs(centroids[codes] - values).max() < 0.1
    few = np.array([0.5, -0.25, 0.5, 2.0])
    c, k = kmeans_1d(few, 16)
    assert np.array_equal(c[k], few.astype(np.float32))


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_magnitude_pruning_and_sharing_round_trip_through_the_file(tmp_path):
    model = small().eval()
    assert compress.magnitude_prune(model, 0.6) == pytest.approx(0.6, abs=0.01)
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())  # made permanent
    encoded = compress.share_weights(model, 4)
    assert all(np.unique(e.codebook).size <= 16 for e in encoded.values())
    arch = {"name": "unused", "num_classes": 4, "in_channels": 3, "kwargs": {}}
    size = compressed.save(tmp_path / "c.zip", model.state_dict(), encoded, bits=4, arch=arch, plan=None, meta={})
    header, state = compressed.read(tmp_path / "c.zip")
    assert size == (tmp_path / "c.zip").stat().st_size and header["bits"] == 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    with pytest.raises(DeployError, match="not a readable compressed file"):
        (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 broken")
        compressed.read(tmp_path / "bad.zip")


def test_keep_zeros_holds_the_pruned_weights_through_training_steps():
    model = small()
    compress.magnitude_prune(model, 0.5)
    held = compress.KeepZeros(model)
    held.on_fit_start(None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        model(torch.randn(4, 3, 8, 8)).sum().backward()
        held.after_backward(None)
        opt.step()
        held.after_step(None)
        opt.zero_grad()
    assert compress.sparsity_of(model) == pytest.approx(0.5, abs=0.01)


def test_guard_schedule_and_sqnr():
    assert schedule(3) == [1, 2, 3]
    assert schedule(40) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 40]
    ref = [np.ones((2, 3))]
    assert sqnr_db(ref, [np.ones((2, 3))]) == float("inf")
    assert sqnr_db(ref, [np.full((2, 3), 1.1)]) == pytest.approx(20.0)


def test_latency_is_measured_for_every_model_and_batch_it_accepts():
    dynamic = runtime.session(serialize(export(small(), (3, 8, 8)).model))
    fixed = runtime.session(serialize(export(small(), (3, 8, 8), batch=1).model))
    times = latency.measure({"dynamic": dynamic, "fixed": fixed}, (3, 8, 8), warmup=1, repeats=3)
    assert times["dynamic"][1] > 0 and times["dynamic"][32] > 0
    assert times["fixed"][1] > 0 and times["fixed"][32] is None  # a fixed batch of 1 cannot run 32


def test_headless_table_lines():
    rows = {
        "stage": {"accuracy": 0.9, "params": 10, "flops": 20, "latency_b1_ms": 1.0},
        "original.onnx": {"accuracy": 0.9, "params": 100, "flops": 200, "size": 4096, "latency_b1_ms": 2.0,
                          "latency_b32_ms": 40.0, "threads": 1, "format": "fp32"},
        "c.zip": {"accuracy": 0.89, "params": 30, "flops": 200, "size": 1024, "latency_b1_ms": 2.0,
                  "latency_b32_ms": 20.0, "threads": 1, "format": "sparse-5bit"},
    }
    stages, artifacts = table.split(rows)
    assert list(stages) == ["stage"] and list(artifacts) == ["original.onnx", "c.zip"]
    text = "\n".join(table.lines(artifacts))
    assert "1 thread," in text and "4.0 KiB" in text and "2.00x" in text and "multiplies every zero" in text


def test_exporter_chatter_goes_to_the_log_once(capsys):
    lines: list[str] = []
    for _ in range(2):
        with quiet(lines.append, "export"):
            print("[torch.onnx] progress line")
            warnings.warn("something deprecated", FutureWarning, stacklevel=1)
            logging.getLogger("torch.onnx.inner").warning("a torch warning")
    assert capsys.readouterr().out == ""
    assert lines == ["export: [torch.onnx] progress line", "export: warning: a torch warning",
                     "export: warning: FutureWarning: something deprecated"]


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_weight_sharing_at_every_bit_width_round_trips(tmp_path, bits):
    model = small().eval()
    compress.magnitude_prune(model, 0.3)
    encoded = compress.share_weights(model, bits)
    assert all(e.codebook.size <= 2**bits and e.codes.max() < 2**bits for e in encoded.values())
    arch = {"name": "unused", "num_classes": 4, "in_channels": 3, "kwargs": {}}
    compressed.save(tmp_path / "c.zip", model.state_dict(), encoded, bits=bits, arch=arch, plan=None, meta={})
    _, state = compressed.read(tmp_path / "c.zip")
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name


def test_compress_stage_bits_outside_4_to_8_are_refused():
    from engine import config
    from engine.errors import PresetError

    def spec(**compress_keys):
        return {"name": "c", "stages": [{"type": "train"}, {"type": "compress", **compress_keys}]}

    assert config.spec_from_dict(spec()).stages[1].bits == 5
    assert config.spec_from_dict(spec(bits=8)).stages[1].bits == 8
    for bits in (3, 9):
        with pytest.raises(PresetError, match="bits"):
            config.spec_from_dict(spec(bits=bits))


def test_demo_preset_ends_in_export_and_quantize():
    from engine import config

    stages = config.load_preset("demo").stages
    assert [s.type for s in stages][-2:] == ["export", "quantize"]
    assert stages[-1].max_drop == 1.0 and any(s.type == "prune" for s in stages)
