"""Callback points of the trainer: when each is called and what the gradients look like there."""

from __future__ import annotations

import pytest
import torch

from engine import checkpoint, data
from engine.config import DataSpec, TrainingSpec
from engine.runs import RunWriter, create_run_dir
from engine.train import Trainer

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.grad_norms: list[float] = []
        self.extra = torch.nn.Parameter(torch.zeros(3))

    def on_fit_start(self, trainer) -> None:
        self.events.append("fit_start")

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.extra]

    def before_backward(self, trainer, loss) -> None:
        assert loss.requires_grad
        self.events.append("before_backward")

    def after_backward(self, trainer) -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.stack([g.norm() for g in grads]).norm()))
        self.events.append("after_backward")

    def after_step(self, trainer) -> None:
        self.events.append("after_step")

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        self.events.append("epoch_end")
        return {"recorder_epoch": float(epoch)}

    def on_fit_end(self, trainer) -> None:
        self.events.append("fit_end")


@pytest.mark.parametrize("accumulate", [1, 2])
def test_callback_order_and_accumulation(tmp_path, accumulate):
    bundle = data.build(DataSpec(num_classes=4, train_size=128, val_size=32), batch_size=32)
    cfg = TrainingSpec(epochs=1, batch_size=32, lr=0.01, device="cpu", accumulate=accumulate, log_every=1)
    rec = Recorder()
    writer = RunWriter(create_run_dir(tmp_path, "cb"))
    trainer = Trainer(checkpoint.build_model(ARCH), bundle, cfg, stage="train", writer=writer, arch=ARCH, callbacks=[rec])
    result = trainer.fit()
    micro, steps = len(bundle.train), len(bundle.train) // accumulate
    assert rec.events[0] == "fit_start" and rec.events[-2:] == ["epoch_end", "fit_end"]
    assert rec.events.count("before_backward") == micro
    assert rec.events.count("after_backward") == rec.events.count("after_step") == steps
    assert all(n > 0 and n == n for n in rec.grad_norms)
    assert result.last["recorder_epoch"] == 0.0
    assert trainer.step == steps


def test_extra_parameters_reach_the_optimizer(tmp_path):
    bundle = data.build(DataSpec(num_classes=4, train_size=64, val_size=32), batch_size=32)
    cfg = TrainingSpec(epochs=1, batch_size=32, lr=0.1, device="cpu", weight_decay=0.0, momentum=0.0)

    class Pull(Recorder):
        def before_backward(self, trainer, loss) -> None:
            (self.extra - 1.0).pow(2).sum().backward(retain_graph=False)

    rec = Pull()
    writer = RunWriter(create_run_dir(tmp_path, "extra"))
    Trainer(checkpoint.build_model(ARCH), bundle, cfg, stage="train", writer=writer, arch=ARCH, callbacks=[rec]).fit()
    assert torch.all(rec.extra.detach() > 0)  # trained towards 1 by the optimizer the trainer built
