"""Detection under torchrun: two gloo ranks on the CPU train inside Ultralytics' own DDP.

A tiny preset's run under 2 ranks against the same run in one process (the same global batch), a
cancel that ends every rank with 130 and resumes, a rank killed mid-epoch (the run fails naming it,
and resumes), and the refusals that come before a run directory exists.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from detect_helpers import TINY_DETECT, write_preset

from engine import checkpoint, runs
from engine.cli import ExitCode, main

import helpers

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("ultralytics_offline")]

ENGINE_FRAMES = ("engine/pipeline.py", "engine/cli.py", "engine/detect/trainer.py", "engine/distributed.py")


def torchrun(*args: str) -> subprocess.Popen:
    return helpers.torchrun(*args, "--plain")


def finish(p: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        p.kill()
    return p.returncode, out, err


def wait_until(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"step"') if path.exists() else 0


def epoch_lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"mAP50_95"' in x]


def spread_start(path: Path) -> Path:
    """The tiny preset's model with its gammas spread over [0.05, 1.05]: the prune's ranking is decided
    by the model, not by the last digits that two ways of summing the same gradients leave."""
    from torch import nn

    from engine.detect.model import arch_of, build

    torch.manual_seed(0)
    model = build(TINY_DETECT["model"]["arch"], 3, imgsz=64, names=["circle", "square", "triangle"], width=0.125)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.05
    checkpoint.save(path, model, arch_of(model, "yolov8n.yaml"))
    return path


def test_two_gloo_ranks_slim_a_detector_as_one_process_does(tmp_path, capsys):
    start = spread_start(tmp_path / "start.pt")
    kd = {"type": "finetune", "name": "kd", "teacher": "original", "kd": {"T": 2.0},
          "features": [{"type": "cosine", "student": "model.9", "teacher": "model.9"}]}  # a 1x1 adapter: pruned -> full
    stages = [{"type": "sparse", "s": 1e-3}, {"type": "prune", "percent": 0.3}, {"type": "finetune"}, kd]
    common = {"model": {"checkpoint": str(start)}, "stages": stages,
              "data": {**TINY_DETECT["data"], "augment": False}}
    one = write_preset(tmp_path, name="one", **common)
    two = write_preset(tmp_path, name="two", **common)
    assert main(["--batch", str(one), "--plain"]) == ExitCode.OK
    code, out, err = finish(torchrun(str(two)))
    assert code == 0, err[-4000:]
    a, b = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]  # one run directory for 2 ranks
    status = json.loads((b / "status.json").read_text())
    assert status["state"] == "done" and status["world_size"] == 2 and status["completed"] == ["sparse", "prune", "finetune", "kd"]
    # one writer: one line per epoch and stage, not one per rank; Ultralytics' per-rank batch is half the global
    assert [(r["stage"], r["epoch"]) for r in epoch_lines(b)] == [("sparse", 0), ("finetune", 0), ("kd", 0)]
    batches = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines() if '"mAP50_95"' not in x]
    assert [r["step"] for r in batches if r["stage"] == "sparse"] == [1, 2]  # 32 images, 16 per step, as in one process
    # the same cut, up to the channels whose gammas the two runs leave within a hair of the threshold:
    # each rank's BatchNorm normalises its 8 images (one process: 16), the sampler deals the images
    # in another order, and each rank's loss is normalised by its own targets before the average
    pa, pb = (json.loads((p / "plan.json").read_text()) for p in (a, b))
    kept_a, kept_b = ([set(g["kept_idxs"]) for g in p["groups"]] for p in (pa, pb))
    total = sum(map(len, kept_a))
    assert [g["root"] for g in pa["groups"]] == [g["root"] for g in pb["groups"]]
    assert abs(total - sum(map(len, kept_b))) <= 0.01 * total
    assert sum(len(x ^ y) for x, y in zip(kept_a, kept_b, strict=True)) <= 0.02 * total
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert abs(sa["prune"]["params"] - sb["prune"]["params"]) <= 0.02 * sa["prune"]["params"]
    assert abs(sa["finetune"]["mAP50_95"] - sb["finetune"]["mAP50_95"]) <= 0.05
    assert abs(sa["kd"]["mAP50_95"] - sb["kd"]["mAP50_95"]) <= 0.05 and sb["kd"]["params"] == sb["finetune"]["params"]
    assert "1 map(s), 1 through a 1x1 adapter" in (b / "log.txt").read_text()
    # every rank left the same model: rank 1 continued from rank 0's files, which are the run's outputs
    pruned = checkpoint.load(b / "weights" / "kd.pt")
    assert sum(p.numel() for p in pruned.model.parameters()) == sb["kd"]["params"]
    assert "Traceback" not in err, err[-4000:]


RANK_DUMP = """
import os, sys
import torch
from engine.cli import main
from engine.detect import trainer as detect_trainer

out, made = sys.argv[1], []
make, train = detect_trainer.make_trainer, detect_trainer.train


def capture(*args, **kwargs):
    made.append(make(*args, **kwargs))
    return made[-1]


def train_and_dump(model, data, args, session):
    best = train(model, data, args, session)
    t = made[-1]
    state = {"model." + k: v for k, v in detect_trainer._unwrap(t.model).state_dict().items()}
    state |= {"ema." + k: v for k, v in t.ema.ema.state_dict().items()}
    if session.distill is not None:
        state |= {"adapter." + k: v for k, v in session.distill.adapters.state_dict().items()}
    torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, f"{out}/{session.stage}-{os.environ['RANK']}.pt")
    return best


detect_trainer.make_trainer, detect_trainer.train = capture, train_and_dump
sys.exit(main(["--batch", *sys.argv[2:]]))
"""


def test_every_rank_trains_the_same_weights_penalty_ema_and_kd_adapters(tmp_path):
    kd = {"type": "finetune", "name": "kd", "teacher": "original", "kd": {"T": 2.0},
          "features": [{"type": "cosine", "student": "model.9", "teacher": "model.9"}]}
    stages = [{"type": "sparse", "s": 1e-2}, {"type": "prune", "percent": 0.3}, kd]
    preset = write_preset(tmp_path, stages=stages, data={**TINY_DETECT["data"], "augment": False},
                          training={**TINY_DETECT["training"], "epochs": 2, "batch_size": 8})
    script = tmp_path / "dump.py"
    script.write_text(RANK_DUMP)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(helpers.free_port()), str(script), str(tmp_path), str(preset), "--plain"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    for stage in ("sparse", "kd"):
        a, b = (torch.load(tmp_path / f"{stage}-{r}.pt", weights_only=True) for r in (0, 1))
        assert a.keys() == b.keys()
        # Ultralytics' DDP keeps each rank's own BatchNorm running statistics in the live model
        # (broadcast_buffers=False); the EMA's, which are validated and saved, come from rank 0
        same = [k for k in a if not (k.startswith("model.") and k.rsplit(".", 1)[1] in ("running_mean", "running_var"))]
        for k in same:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{stage}: {k} differs between the ranks")
        assert any(k.startswith("adapter.") for k in a) == (stage == "kd")
    sparse = torch.load(tmp_path / "sparse-0.pt", weights_only=True)  # the gammas moved from their 1.0
    assert (sparse["model.model.0.bn.weight"] - 1.0).abs().max() > 1e-5


def test_a_cancel_stops_both_ranks_and_a_lost_rank_fails_the_run_readably(tmp_path):
    data = {**TINY_DETECT["data"], "train_size": 64, "augment": False}
    training = {**TINY_DETECT["training"], "epochs": 3, "batch_size": 8}
    preset = write_preset(tmp_path, data=data, training=training)
    run = tmp_path / "runs" / "dtiny"

    # SIGTERM to rank 0 (the pid in status.json: the workbench's c key): both ranks stop at one batch
    first = torchrun(str(preset))
    wait_until(lambda: steps_logged(run) >= 2, "the first steps")
    os.kill(runs.read_run(run).pid, signal.SIGTERM)
    code, out, err = finish(first)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "cancelled" and status["world_size"] == 2, err[-4000:]
    assert f"resume with: torchrun --nproc_per_node 2 -m engine --batch --resume {run}" in out
    for rank in (0, 1):  # torchrun's failure summary lists every rank with its exit code: 130 for both
        assert re.search(rf"rank\s+: {rank} \(local_rank: {rank}\)\n\s+exitcode\s+: 130 ", err), err[-4000:]
    assert not any(frame in err for frame in ENGINE_FRAMES), err[-4000:]
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert last["position"]["stage"] == "train"
    stopped_at = last["position"]["step"]

    # resumed under torchrun, then rank 1 is killed in the middle of an epoch
    second = torchrun("--resume", str(run))
    wait_until(lambda: steps_logged(run) >= stopped_at + 2, "the resumed steps")
    main_pid = runs.read_run(run).pid
    children = subprocess.run(["pgrep", "-P", str(second.pid)], capture_output=True, text=True).stdout.split()
    other = next(int(p) for p in children if int(p) != main_pid)
    t0 = time.time()
    os.kill(other, signal.SIGKILL)
    code, out, err = finish(second)
    assert time.time() - t0 < 120  # rank 0 notices at its next collective, not after the group timeout
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed", status
    assert "rank 1 of this torchrun run stopped" in status["error"] and "rank 0 of 2 cannot go on" in status["error"]
    assert "\n" not in status["error"]
    assert f"resume with: torchrun --nproc_per_node 2 -m engine --batch --resume {run}" in err
    assert not any(frame in err for frame in ENGINE_FRAMES), err[-4000:]

    # and resumed again: the run finishes, each epoch recorded once
    code, out, err = finish(torchrun("--resume", str(run)))
    assert code == 0, err[-4000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["completed"] == ["train"]
    assert [r["epoch"] for r in epoch_lines(run)] == [0, 1, 2]


def as_rank(monkeypatch, world: int, rank: int = 0, local_world: int | None = None) -> None:
    """This process seen as one rank of a torchrun run (the checks before any process group)."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world or world))


def test_a_batch_that_the_ranks_cannot_share_is_refused_with_the_nearest_that_works(tmp_path, monkeypatch, capsys):
    stages = [{"type": "train"}, {"type": "finetune", "training": {"batch_size": 10}}]
    preset = write_preset(tmp_path, stages=stages, training={**TINY_DETECT["training"], "batch_size": 12})
    as_rank(monkeypatch, 4)
    assert main(["--batch", str(preset)]) == ExitCode.USAGE
    said = capsys.readouterr().err
    assert "stage finetune: batch_size 10 does not divide among 4 processes" in said
    assert "use batch_size 8 or 12, or --nproc_per_node 2 or 5" in said
    assert not (tmp_path / "runs").exists()  # refused before a run directory exists


def test_more_processes_than_gpus_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    preset = write_preset(tmp_path, training={**TINY_DETECT["training"], "device": "auto"})
    as_rank(monkeypatch, 4, local_world=4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["--batch", str(preset)]) == ExitCode.USAGE
    said = capsys.readouterr().err
    assert "torchrun started 4 processes on this machine (--nproc_per_node) but it has 2 CUDA device(s)" in said
    assert "use --nproc_per_node 2" in said
    assert not (tmp_path / "runs").exists()
