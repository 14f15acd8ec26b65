"""DDP runs stop and resume as they were started: under torchrun, with the same world size.

Two gloo processes on the CPU: a cancel ends every rank with exit code 130 and no traceback,
the resume hint is the torchrun command, a resume with another world size is refused unless the
change is asked for, and a rank killed mid-run leaves one readable line in status.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from engine import checkpoint, runs
from engine.cli import ExitCode, install_signal_handlers, main
from engine.train import StopFlag

from helpers import torchrun

KD_STUDENT = {"arch": "kd_student", "kwargs": {"bn": True}}
ENGINE_FRAMES = ("engine/pipeline.py", "engine/train.py", "engine/cli.py", "engine/distributed.py")


def wait_until(condition, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"step"') if path.exists() else 0


def ranks(launcher: subprocess.Popen) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def no_engine_traceback(err: str) -> None:
    assert not any(frame in err for frame in ENGINE_FRAMES), err[-4000:]
    assert "[rank0]:" not in err and "[rank1]:" not in err, err[-4000:]


def test_a_torchrun_run_cancels_resumes_and_loses_a_rank_readably(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(model=KD_STUDENT, data={"dataset": "shapes", "num_classes": 4, "train_size": 256,
                                                 "val_size": 32, "augment": False},
                         training={"epochs": 50, "batch_size": 16, "lr": 0.05, "log_every": 1, "device": "cpu"})
    run = tmp_path / "runs" / "tiny"

    # cancel: SIGTERM to the pid in status.json (the workbench's c key, or kill -TERM PID)
    first = torchrun(str(preset), "--runs-dir", str(tmp_path / "runs"))
    try:
        wait_until(lambda: steps_logged(run) >= 2, "the first steps")
        os.kill(runs.read_run(run).pid, signal.SIGTERM)
        out, err = first.communicate(timeout=180)
    finally:
        first.kill()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "cancelled" and status["world_size"] == 2, err[-3000:]
    assert (run / "weights" / "last.pt").exists()
    hint = f"resume with: torchrun --nproc_per_node 2 -m engine --batch --resume {run}"
    assert hint in out, out
    assert err.count("exitcode: 130") >= 1 and "exitcode: 1 " not in err, err[-3000:]  # every rank: 130
    no_engine_traceback(err)

    # one process would change the results: refused, with the command that keeps them
    capsys.readouterr()
    assert main(["--batch", "--resume", str(run)]) == ExitCode.USAGE
    said = capsys.readouterr().err
    assert "was started with 2 processes" in said and "torchrun --nproc_per_node 2 -m engine" in said
    assert "--world-size-change" in said
    assert json.loads((run / "status.json").read_text())["state"] == "cancelled"  # nothing written

    # resumed under torchrun, then one rank is killed: one line says what happened
    before = steps_logged(run)
    second = torchrun("--resume", str(run))
    try:
        wait_until(lambda: steps_logged(run) >= before + 2, "the resumed steps")
        main_pid = runs.read_run(run).pid
        other = next(p for p in ranks(second) if p != main_pid)
        os.kill(other, signal.SIGKILL)
        out, err = second.communicate(timeout=180)
    finally:
        second.kill()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed", status
    assert "\n" not in status["error"] and "rank 1 of this torchrun run stopped" in status["error"]
    assert "rank 0 of 2 cannot go on" in status["error"] and len(status["error"]) < 400
    assert "failed: rank 1 of this torchrun run stopped" in (run / "log.txt").read_text()
    assert f"resume with: torchrun --nproc_per_node 2 -m engine --batch --resume {run}" in err
    no_engine_traceback(err)
    assert checkpoint.read_raw(run / "weights" / "last.pt")["position"]["stage"] == "train"  # still resumable


def test_a_world_size_change_is_refused_unless_asked_for(tmp_path, tiny_preset, capsys):
    preset = tiny_preset(model=KD_STUDENT, training={"epochs": 2, "batch_size": 32, "lr": 0.05, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.OK
    run = tmp_path / "runs" / "tiny"
    status = json.loads((run / "status.json").read_text())
    assert status["world_size"] == 1
    # the same run as if started by torchrun with 4 processes and cancelled inside its second epoch
    (run / "status.json").write_text(json.dumps({**status, "state": "cancelled", "world_size": 4, "stage": "train",
                                                 "completed": [], "outputs": {}}))
    (run / "summary.json").unlink()
    (run / "weights" / "train.pt").unlink()
    capsys.readouterr()
    assert main(["--batch", "--resume", str(run)]) == ExitCode.USAGE
    assert "torchrun --nproc_per_node 4 -m engine --batch --resume" in capsys.readouterr().err
    from tui import launcher  # the workbench's resume key runs one process: the same refusal

    try:
        launcher.resume(run)
    except launcher.LaunchError as e:
        assert "was started with 4 processes" in str(e)
    else:
        raise AssertionError("the workbench resumed a 4-process run with one process")
    assert main(["--batch", "--resume", str(run), "--world-size-change"]) == ExitCode.OK
    assert "resume: world size 4 -> 1 (--world-size-change)" in (run / "log.txt").read_text()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["world_size"] == 1
    assert main(["--batch", "--resume", str(run)]) == ExitCode.OK  # a finished run: nothing to refuse


def test_under_torchrun_a_second_sigint_still_waits_for_the_step_boundary():
    for torchrun_rank, stops_now in ((False, True), (True, False)):
        stop = StopFlag()
        previous = install_signal_handlers(stop, repeat_stops_now=not torchrun_rank)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            interrupted = False
            try:
                os.kill(os.getpid(), signal.SIGINT)  # torchrun passes the user's Ctrl-C on: a second one
                time.sleep(0.05)
            except KeyboardInterrupt:
                interrupted = True
            assert stop.requested and interrupted == stops_now
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def test_the_process_group_is_destroyed_after_the_ddp_model_that_holds_it_is_freed(tmp_path, monkeypatch):
    """A cancelled rank's DDP model sits in traceback cycles; destroyed after the group, at interpreter
    exit, gloo's threads abort the rank (SIGABRT, "terminate called without an active exception")."""
    import gc
    import weakref

    import torch.distributed as dist
    from torch import nn

    from engine import distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    gc.disable()  # the cycle below stays until a collection: that one must come before the destroy
    try:
        model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
        model(torch.randn(8, 4)).sum().backward()
        alive = weakref.ref(model)
        holder = {"model": model}
        holder["self"] = holder  # as a traceback's frames hold the trainer's locals
        del model, holder
        seen = []
        destroy = dist.destroy_process_group
        monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: (seen.append(alive()), destroy(*a, **k)))
        distributed.shutdown()
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()
    assert seen == [None] and not dist.is_initialized()
