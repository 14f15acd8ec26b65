"""SparsePenalty: the L1 subgradient on BatchNorm gamma, its decay, exclusion and sparsity figures."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import PruneError
from engine.slim.sparse import SparsePenalty, sparsity_figures


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.unused = nn.BatchNorm2d(3)  # never called: its gamma has no data gradient
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def make(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny()
    with torch.no_grad():
        m.bn1.weight.copy_(torch.tensor([0.5, -0.2, 0.0, 1.5, -3.0, 0.004]))
        m.bn2.weight.copy_(torch.tensor([-0.0005, 0.7, 0.02, -0.9]))
        m.unused.weight.copy_(torch.tensor([0.3, -0.3, 0.0]))
    return m


def trainer_for(model: nn.Module, epoch: int = 0, epochs: int = 10) -> SimpleNamespace:
    return SimpleNamespace(
        model=model, epoch=epoch, epochs=epochs, step=0, device=torch.device("cpu")
    )


def backward(model: nn.Module) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model(x).square().sum().backward()


def test_adds_exactly_s_times_sign_gamma_to_bn_grads_only():
    model = make()
    trainer = trainer_for(model)
    pen = SparsePenalty(s=1e-2)
    pen.on_fit_start(trainer)
    backward(model)
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    pen.after_backward(trainer)
    for name, p in model.named_parameters():
        if name in ("bn1.weight", "bn2.weight"):
            expected = before[name] + 1e-2 * torch.sign(p.detach())
            torch.testing.assert_close(p.grad, expected, rtol=0, atol=0)
        elif name == "unused.weight":
            torch.testing.assert_close(p.grad, 1e-2 * torch.sign(p.detach()), rtol=0, atol=0)
        elif name in before:
            torch.testing.assert_close(p.grad, before[name], rtol=0, atol=0)
        else:
            assert p.grad is None
    # sign(0) = 0: a channel already at zero is not pushed through it
    assert model.bn1.weight.grad[2] == before["bn1.weight"][2]


def test_sgd_step_with_only_the_penalty_shrinks_abs_gamma_by_lr_times_s():
    model = make()
    trainer = trainer_for(model)
    pen = SparsePenalty(s=1e-2)
    pen.on_fit_start(trainer)
    opt = torch.optim.SGD(pen.weights, lr=0.5)
    old = model.bn1.weight.detach().clone()
    opt.zero_grad()
    (model(torch.randn(1, 3, 4, 4)) * 0).sum().backward()
    pen.after_backward(trainer)
    opt.step()
    expected = old - 0.5 * 1e-2 * torch.sign(old)
    torch.testing.assert_close(model.bn1.weight.detach(), expected)


@pytest.mark.parametrize(("epoch", "factor"), [(0, 1.0), (5, 1 - 0.9 * 0.5), (9, 1 - 0.9 * 0.9)])
def test_decay_schedule(epoch, factor):
    model = make()
    trainer = trainer_for(model, epoch=epoch, epochs=10)
    pen = SparsePenalty(s=1e-3, decay=True)
    pen.on_fit_start(trainer)
    backward(model)
    before = model.bn2.weight.grad.clone()
    pen.after_backward(trainer)
    assert pen.s_eff == pytest.approx(1e-3 * factor)
    torch.testing.assert_close(
        model.bn2.weight.grad, before + 1e-3 * factor * torch.sign(model.bn2.weight.detach())
    )
    assert pen.on_epoch_end(trainer, epoch)["s"] == pytest.approx(1e-3 * factor)


def test_no_decay_keeps_s():
    pen = SparsePenalty(s=2e-4)
    assert pen.s_at(7, 10) == 2e-4


def test_exclude_patterns_leave_matching_bns_alone():
    model = make()
    trainer = trainer_for(model)
    pen = SparsePenalty(s=1e-2, exclude=["bn2", "unus*"])
    pen.on_fit_start(trainer)
    assert pen.names == ["bn1"]
    backward(model)
    before = model.bn2.weight.grad.clone()
    pen.after_backward(trainer)
    torch.testing.assert_close(model.bn2.weight.grad, before, rtol=0, atol=0)
    assert model.unused.weight.grad is None


def test_model_without_bn_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(PruneError, match="BatchNorm"):
        SparsePenalty().on_fit_start(trainer_for(model))


@pytest.mark.parametrize("s", [-1e-4, float("nan"), "big"])
def test_bad_s_is_rejected(s):
    with pytest.raises(PruneError, match="sparsity s"):
        SparsePenalty(s=s)


def test_epoch_end_sparsity_figures():
    model = make()
    trainer = trainer_for(model)
    pen = SparsePenalty(s=1e-4)
    pen.on_fit_start(trainer)
    figs = pen.on_epoch_end(trainer, 0)
    values = np.abs(
        np.array([0.5, -0.2, 0.0, 1.5, -3.0, 0.004, -0.0005, 0.7, 0.02, -0.9, 0.3, -0.3, 0.0])
    )
    assert figs["gamma_lt_1e-2"] == pytest.approx((values < 1e-2).mean())
    assert figs["gamma_lt_1e-3"] == pytest.approx((values < 1e-3).mean())
    for q in (10, 50, 90):
        assert figs[f"gamma_q{q}"] == pytest.approx(np.quantile(values, q / 100), rel=1e-6)
    assert figs["sparsity/bn1"] == pytest.approx(2 / 6)
    assert figs["sparsity/bn2"] == pytest.approx(1 / 4)
    assert figs["sparsity/unused"] == pytest.approx(1 / 3)
    assert figs["s"] == 1e-4
    assert all(isinstance(v, float) for v in figs.values())


def test_sparsity_figures_empty_is_empty():
    assert sparsity_figures([], []) == {}


def test_package_import_does_not_import_torch():
    code = "import sys, engine.slim; assert 'torch' not in sys.modules, 'torch imported'; print(len(engine.slim.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 5
