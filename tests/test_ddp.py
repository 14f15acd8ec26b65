"""Two processes with gloo on the CPU: DDP ranks end with identical weights; rank 0 alone writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from engine import checkpoint, data, distributed
    from engine.config import DataSpec, TrainingSpec
    from engine.runs import RunWriter
    from engine.train import Trainer

    out = Path(sys.argv[1])
    info = distributed.from_env()
    device = torch.device("cpu")
    distributed.init(info, device)
    arch = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})
    torch.manual_seed(123 + info.rank)  # different init per rank: DDP must broadcast rank 0's
    model = checkpoint.build_model(arch)
    cfg = TrainingSpec(epochs=2, batch_size=16, lr=0.05, device="cpu", sync_bn=True, log_every=2)  # ignored on the CPU
    bundle = data.build(DataSpec(num_classes=4, train_size=128, val_size=32), batch_size=16,
                        rank=info.rank, world_size=info.world_size)
    writer = RunWriter(out, enabled=info.is_main)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, bundle, cfg, stage="train", writer=writer, arch=arch, device=device, dist_info=info)
    trainer.fit()
    torch.save({k: v.detach() for k, v in model.named_parameters()}, out / f"rank{info.rank}.pt")
    distributed.shutdown()
    """
)


def _vgg() -> torch.nn.Module:
    from engine import checkpoint

    return checkpoint.build_model(checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_ends_with_identical_weights(tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), str(tmp_path / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    w0 = torch.load(tmp_path / "run" / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "run" / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    assert len(w0) == sum(1 for _ in torch.nn.Module.named_parameters(_vgg()))
    # rank 0 alone wrote the run's files
    assert (tmp_path / "run" / "metrics.jsonl").exists() and (tmp_path / "run" / "weights" / "last.pt").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum('"accuracy"' in line for line in lines) == 2  # one epoch line per epoch, not one per rank


def test_torchrun_batch_cli_writes_one_run_dir(tmp_path: Path, tiny_preset):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    preset = tiny_preset(training={"epochs": 1, "batch_size": 16, "lr": 0.05, "device": "cpu", "log_every": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "engine", "--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["tiny"]
    assert (tmp_path / "runs" / "tiny" / "weights" / "best.pt").exists()


def test_a_killed_rank_is_named_once_it_has_exited(monkeypatch):
    """A killed rank closes its sockets before it is a zombie: the survivor waits a moment to name it."""
    from engine import distributed

    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    try:
        monkeypatch.setattr(distributed, "_peers", [(socket.gethostname(), os.getpid()), (socket.gethostname(), peer.pid)])
        info = distributed.DistInfo(rank=0, world_size=2)
        assert distributed.lost_ranks(info) == []  # still running
        assert distributed.lost_ranks(info, wait=10.0) == [1]  # exited (a zombie: not reaped yet)
    finally:
        peer.wait()
