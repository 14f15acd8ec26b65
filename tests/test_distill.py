"""Distillation: losses against hand-computed values, taps, adapters, and the Distiller."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from engine.distill.adapters import build_cosine_adapter, build_hint_adapter
from engine.distill.distiller import Distiller, parse_feature_term, parse_kd
from engine.distill.losses import cosine_loss, hint_loss, kd_loss
from engine.distill.taps import FeatureTaps
from engine.errors import DistillError

NUM_CLASSES = 4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # These nets are tiny: a second intra-op thread only adds contention on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- hand-written reference math (plain Python floats) ---------------------------


def _softmax(v: list[float]) -> list[float]:
    m = max(v)
    e = [math.exp(a - m) for a in v]
    z = sum(e)
    return [a / z for a in e]


def _kd_by_hand(s, t, labels, T, w_kd, w_ce):
    n = len(s)
    ce = sum(-math.log(_softmax(s[i])[labels[i]]) for i in range(n)) / n
    kl = 0.0
    for i in range(n):
        p_t = _softmax([a / T for a in t[i]])
        p_s = _softmax([a / T for a in s[i]])
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    kd = T * T * kl / n
    return w_ce * ce + w_kd * kd, ce, kd


def _flat(x: list) -> list[float]:
    return [v for row in x for v in (_flat(row) if isinstance(row, list) else [row])]


S_LOGITS = [[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]]
T_LOGITS = [[2.0, 0.5, 0.0], [1.0, 1.0, -0.5]]
LABELS = [1, 2]
S_FEAT = [[[1.0, 2.0], [0.5, -1.0]], [[0.0, 3.0], [1.0, 1.0]]]  # (2, 2, 2)
T_FEAT = [[[2.0, 1.0], [0.0, -1.0]], [[1.0, 1.0], [-1.0, 2.0]]]


# -- losses ----------------------------------------------------------------------


@pytest.mark.parametrize("T,w_kd,w_ce", [(2.0, 0.25, 0.75), (4.0, 0.9, 0.1), (1.0, 1.0, 0.0)])
def test_kd_loss_matches_hand_computation(T, w_kd, w_ce):
    total, terms = kd_loss(
        torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), torch.tensor(LABELS), T, w_kd, w_ce
    )
    want, ce, kd = _kd_by_hand(S_LOGITS, T_LOGITS, LABELS, T, w_kd, w_ce)
    assert total.item() == pytest.approx(want, rel=1e-5)
    assert terms["ce"] == pytest.approx(ce, rel=1e-5)
    assert terms["kd"] == pytest.approx(kd, rel=1e-5)


def test_kd_loss_is_zero_kd_when_student_equals_teacher():
    s = torch.tensor(S_LOGITS)
    _, terms = kd_loss(s, s.clone(), torch.tensor(LABELS))
    assert terms["kd"] == pytest.approx(0.0, abs=1e-6)


def test_cosine_loss_matches_hand_computation():
    got = cosine_loss(torch.tensor(S_FEAT), torch.tensor(T_FEAT)).item()
    want = 0.0
    for s, t in zip(S_FEAT, T_FEAT, strict=True):
        s, t = _flat(s), _flat(t)
        dot = sum(a * b for a, b in zip(s, t, strict=True))
        cos = dot / (math.sqrt(sum(a * a for a in s)) * math.sqrt(sum(b * b for b in t)))
        want += 1.0 - cos
    want /= len(S_FEAT)
    assert got == pytest.approx(want, rel=1e-5)
    ref = nn.CosineEmbeddingLoss()(
        torch.tensor(S_FEAT).flatten(1), torch.tensor(T_FEAT).flatten(1), torch.ones(2)
    )
    assert got == pytest.approx(ref.item(), rel=1e-5)


def test_hint_loss_matches_hand_computation():
    got = hint_loss(torch.tensor(S_FEAT), torch.tensor(T_FEAT)).item()
    s, t = _flat(S_FEAT), _flat(T_FEAT)
    want = sum((a - b) ** 2 for a, b in zip(s, t, strict=True)) / len(s)
    assert got == pytest.approx(want, rel=1e-6)


def test_losses_reject_mismatched_shapes():
    with pytest.raises(DistillError, match="projection/regressor"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(DistillError, match="same classes"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


def test_losses_run_in_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(6, 5)
    x = torch.randn(8, 6, generator=g)
    t = torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = lin(x)
        assert s.dtype == torch.bfloat16  # the inputs really are low precision
        kd, _ = kd_loss(s, t.bfloat16(), y)
        cos = cosine_loss(s, t.bfloat16())
        mse = hint_loss(s, t.bfloat16())
    s32, t32 = s.float(), t.bfloat16().float()
    ref_kd, _ = kd_loss(s32, t32, y)
    for got, ref in ((kd, ref_kd), (cos, cosine_loss(s32, t32)), (mse, hint_loss(s32, t32))):
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)
    kd.backward()
    assert lin.weight.grad is not None


# -- tiny nets and data ----------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self, width: int, num_classes: int = NUM_CLASSES, stride: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=stride),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class SharedReluNet(nn.Module):
    """Calls one ReLU module twice, like many ResNet implementations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


# Class k shifts the mean of the image channels: separable, but needs the convs.
_MEANS = torch.tensor([[1.5, 0, 0], [0, 1.5, 0], [0, 0, 1.5], [-1.0, -1.0, -1.0]])


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) + _MEANS[y][:, :, None, None]
    return x, y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train(was)
    return acc


@pytest.fixture(scope="module")
def teacher() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet(8)
    x, y = make_data(512, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for i in range(60):
        xb, yb = x[(i * 32) % 512 :][:32], y[(i * 32) % 512 :][:32]
        loss = nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    xv, yv = make_data(256, seed=2)
    assert accuracy(net, xv, yv) > 0.9
    return net


def fresh_teacher(teacher: TinyNet) -> TinyNet:
    t = TinyNet(8)
    t.load_state_dict(teacher.state_dict())
    return t


def all_hooks(*models: nn.Module) -> list:
    return [h for m in models for mod in m.modules() for h in mod._forward_hooks.values()]


# -- taps ------------------------------------------------------------------------


def test_taps_capture_module_outputs_without_changing_them():
    torch.manual_seed(0)
    net = TinyNet(4).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        plain = net(x)
        want_bn = net.features[1](net.features[0](x))
        want_feat = net.features(x)
        with FeatureTaps(net, ["features.1", "features"]) as taps:
            tapped = net(x)
            torch.testing.assert_close(taps["features.1"], want_bn, rtol=0, atol=0)
            torch.testing.assert_close(taps["features"], want_feat, rtol=0, atol=0)
            assert taps.calls == {"features.1": 1, "features": 1}
    torch.testing.assert_close(tapped, plain, rtol=0, atol=0)
    assert taps.closed
    assert all_hooks(net) == []


def test_taps_close_removes_every_hook():
    net = TinyNet(4)
    taps = FeatureTaps(net, ["features.0", "features.3", "head"])
    assert len(all_hooks(net)) == 3
    taps.close()
    taps.close()
    assert all_hooks(net) == []


def test_unknown_tap_lists_closest_names_and_leaks_no_hook():
    net = TinyNet(4)
    with pytest.raises(DistillError) as err:
        FeatureTaps(net, ["head", "feature.3"], label="student")
    msg = str(err.value)
    assert "student has no module 'feature.3'" in msg
    assert "features.3" in msg
    assert all_hooks(net) == []


def test_tap_that_did_not_run_is_reported():
    net = TinyNet(4)
    with FeatureTaps(net, ["head"]) as taps, pytest.raises(DistillError, match="did not run"):
        taps["head"]


# -- adapters --------------------------------------------------------------------


@pytest.mark.parametrize("regressor,k", [("1x1", 1), ("3x3", 3)])
def test_hint_regressor_sizing(regressor, k):
    a = build_hint_adapter("s", (2, 8, 4, 4), "t", (2, 16, 4, 4), regressor)
    assert a.proj.weight.shape == (16, 8, k, k)
    s, t = a(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4))
    assert s.shape == t.shape == (2, 16, 4, 4)


@pytest.mark.parametrize("s_hw,t_hw", [((8, 8), (4, 4)), ((4, 4), (8, 8)), ((8, 4), (4, 8))])
def test_hint_pools_the_larger_map_and_says_so(s_hw, t_hw):
    a = build_hint_adapter("s", (2, 8, *s_hw), "t", (2, 16, *t_hw), "3x3")
    s, t = a(torch.randn(2, 8, *s_hw), torch.randn(2, 16, *t_hw))
    assert s.shape == t.shape == (2, 16, 4, 4)
    assert "pooled" in a.description


def test_hint_pooling_averages_the_map():
    a = build_hint_adapter("s", (1, 1, 4, 4), "t", (1, 1, 2, 2), "1x1")
    with torch.no_grad():
        a.proj.weight.fill_(1.0)
        a.proj.bias.zero_()
    s, _ = a(torch.arange(16.0).view(1, 1, 4, 4), torch.zeros(1, 1, 2, 2))
    # top-left 2x2 block of 0..15 in a 4x4 grid: 0, 1, 4, 5
    assert s[0, 0, 0, 0].item() == pytest.approx(2.5)


def test_cosine_linear_projection_flattens_when_spatial_sizes_match():
    a = build_cosine_adapter("s", (2, 8, 4, 4), "t", (2, 16, 4, 4), "linear")
    assert (a.proj.in_features, a.proj.out_features) == (128, 256)
    s, t = a(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4))
    assert s.shape == t.shape == (2, 256)


def test_cosine_linear_projection_pools_when_spatial_sizes_differ():
    a = build_cosine_adapter("s", (2, 8, 8, 8), "t", (2, 16, 4, 4), "linear")
    assert (a.proj.in_features, a.proj.out_features) == (8, 16)
    s, t = a(torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4))
    assert s.shape == t.shape == (2, 16)


def test_cosine_pool_needs_equal_channels_and_suggests_linear():
    a = build_cosine_adapter("s", (2, 16, 8, 8), "t", (2, 16, 4, 4), "pool")
    s, t = a(torch.ones(2, 16, 8, 8), torch.ones(2, 16, 4, 4))
    assert s.shape == t.shape == (2, 16)
    with pytest.raises(DistillError, match="projection: linear"):
        build_cosine_adapter("s", (2, 8, 8, 8), "t", (2, 16, 8, 8), "pool")


def test_equal_shapes_compare_directly():
    a = build_cosine_adapter("s", (2, 8, 4, 4), "t", (2, 8, 4, 4), "pool")
    assert a.proj is None and a.reduce == "none"


def test_hint_on_map_vs_vector_is_refused():
    with pytest.raises(DistillError) as err:
        build_hint_adapter("head", (2, 4), "features", (2, 16, 8, 8), "1x1")
    msg = str(err.value)
    assert "'head' (4,)" in msg and "'features' (16, 8, 8)" in msg


# -- term parsing ----------------------------------------------------------------


def test_feature_term_parsing_errors():
    with pytest.raises(DistillError, match="unknown keys"):
        parse_feature_term({"type": "hint", "student": "a", "teacher": "b", "wieght": 1})
    with pytest.raises(DistillError, match="cosine, hint"):
        parse_feature_term({"type": "mse", "student": "a", "teacher": "b"})
    with pytest.raises(DistillError, match="'pool', 'linear'|pool, linear"):
        parse_feature_term({"type": "cosine", "student": "a", "teacher": "b", "projection": "mlp"})
    with pytest.raises(DistillError, match="needs 'teacher'"):
        parse_feature_term({"type": "hint", "student": "a"})
    term = parse_feature_term({"type": "hint", "student": "layer3", "teacher": "layer3"})
    assert (term.name, term.weight, term.regressor) == ("hint:layer3", 1.0, "1x1")
    # a validated preset term carries both projection and regressor; the unused one is ignored
    dumped = {"type": "hint", "student": "a", "teacher": "b", "weight": 2.0}
    term = parse_feature_term({**dumped, "projection": "pool", "regressor": "3x3"})
    assert (term.weight, term.regressor) == (2.0, "3x3")
    assert parse_kd({"T": 4}) == {"T": 4.0, "w_kd": 0.25, "w_ce": 0.75}
    with pytest.raises(DistillError, match="T must be > 0"):
        parse_kd({"T": 0})


# -- Distiller -------------------------------------------------------------------


def test_class_count_mismatch_is_refused(teacher):
    student = TinyNet(4, num_classes=NUM_CLASSES + 1)
    with pytest.raises(DistillError, match="teacher predicts 4 classes but student predicts 5"):
        Distiller(student, fresh_teacher(teacher), example_input=torch.randn(4, 3, 8, 8))


def test_unmatchable_feature_pair_fails_before_training_and_leaks_no_hook(teacher):
    student, t = TinyNet(4), fresh_teacher(teacher)
    with pytest.raises(DistillError) as err:
        Distiller(
            student,
            t,
            features=[{"type": "hint", "student": "pool", "teacher": "head"}],
            example_input=torch.randn(4, 3, 8, 8),
        )
    assert "'pool' (8, 1, 1)" in str(err.value) and "'head' (4,)" in str(err.value)
    assert all_hooks(student, t) == []


def test_unknown_tap_in_distiller_names_the_model(teacher):
    t = fresh_teacher(teacher)
    with pytest.raises(DistillError, match="teacher has no module 'layer3'"):
        Distiller(
            TinyNet(4),
            t,
            features=[{"type": "cosine", "student": "features", "teacher": "layer3"}],
            example_input=torch.randn(4, 3, 8, 8),
        )
    assert all_hooks(t) == []


def test_module_called_twice_is_refused():
    with pytest.raises(DistillError, match="runs 2 times"):
        Distiller(
            SharedReluNet(),
            SharedReluNet(),
            features=[{"type": "hint", "student": "relu", "teacher": "conv2"}],
            example_input=torch.randn(2, 3, 8, 8),
        )


def test_dry_run_leaves_student_state_and_mode_alone(teacher):
    student = TinyNet(4).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with Distiller(
        student,
        fresh_teacher(teacher),
        features=[{"type": "hint", "student": "features", "teacher": "features"}],
        example_input=torch.randn(8, 3, 8, 8) * 5,
    ):
        pass
    assert student.training
    for k, v in student.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def _distil(teacher: TinyNet, student: TinyNet, steps: int = 50, **kwargs):
    t = fresh_teacher(teacher)
    t_before = {k: v.clone() for k, v in t.state_dict().items()}
    s_keys = list(student.state_dict())
    s_tree = [(n, type(m)) for n, m in student.named_modules()]
    x, y = make_data(steps * 32, seed=3)
    d = Distiller(student, t, example_input=x[:16], **kwargs)
    extra = d.parameters()
    opt = torch.optim.Adam(list(student.parameters()) + extra, lr=1e-2)
    losses, logs = [], []
    student.train()
    for i in range(steps):
        xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        logits = student(xb)
        loss, terms = d(logits, xb, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        logs.append(terms)
    d.on_fit_end(None)

    assert all_hooks(student, t) == []
    # the teacher is frozen: same weights and buffers, no gradients
    for k, v in t.state_dict().items():
        torch.testing.assert_close(v, t_before[k], rtol=0, atol=0)
    assert all(p.grad is None and not p.requires_grad for p in t.parameters())
    # the adapters are not part of the student
    assert list(student.state_dict()) == s_keys
    assert [(n, type(m)) for n, m in student.named_modules()] == s_tree
    student_ids = {id(p) for p in student.parameters()}
    assert not any(id(p) in student_ids for p in extra)

    xv, yv = make_data(256, seed=4)
    return d, losses, logs, accuracy(student, xv, yv)


def _assert_learned(losses: list[float], acc: float) -> None:
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert acc > 0.7  # chance is 0.25


def test_distil_kd_only(teacher):
    torch.manual_seed(1)
    d, losses, logs, acc = _distil(teacher, TinyNet(4))
    assert d.parameters() == []
    assert set(logs[0]) == {"ce", "kd", "loss"}
    first = logs[0]
    assert first["loss"] == pytest.approx(0.75 * first["ce"] + 0.25 * first["kd"], rel=1e-5)
    _assert_learned(losses, acc)


def test_distil_with_cosine_linear_projection(teacher):
    torch.manual_seed(2)
    features = [
        {"type": "cosine", "student": "features", "teacher": "features", "projection": "linear"}
    ]
    d, losses, logs, acc = _distil(teacher, TinyNet(4), features=features)
    assert [p.shape for p in d.parameters()] == [(1024, 512), (1024,)]
    assert "cosine:features" in logs[0]
    _assert_learned(losses, acc)
    assert logs[-1]["cosine:features"] < logs[0]["cosine:features"]


def test_distil_with_hint_regressor_and_spatial_pooling(teacher):
    torch.manual_seed(3)
    features = [
        {
            "type": "hint",
            "student": "features.4",
            "teacher": "features",
            "weight": 0.1,
            "regressor": "3x3",
        }
    ]
    d, losses, logs, acc = _distil(
        teacher, TinyNet(4, stride=2), kd=None, features=features, steps=60
    )
    name = "hint:features.4->features"
    assert set(logs[0]) == {"ce", name, "loss"}
    assert logs[0]["loss"] == pytest.approx(logs[0]["ce"] + 0.1 * logs[0][name], rel=1e-5)
    assert [p.shape for p in d.parameters()] == [(16, 8, 3, 3), (16,)]
    assert "pooled to 4x4" in d.describe()[1]
    _assert_learned(losses, acc)
    assert logs[-1][name] < logs[0][name]


def test_distiller_under_bf16_autocast_returns_fp32_loss(teacher):
    student = TinyNet(4)
    x, y = make_data(8, seed=5)
    d = Distiller(
        student,
        fresh_teacher(teacher),
        features=[{"type": "hint", "student": "features", "teacher": "features"}],
        example_input=x,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = student(x)
        loss, terms = d(logits, x, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None for p in d.parameters())
    assert all(isinstance(v, float) for v in terms.values())
    d.close()
    with pytest.raises(DistillError, match="closed"):
        d(logits, x, y)


def test_distiller_rejects_teacherless_setup_and_foreign_trainer_model(teacher):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(DistillError, match="ignore the teacher"):
        Distiller(TinyNet(4), fresh_teacher(teacher), kd=None, example_input=x)
    d = Distiller(TinyNet(4), fresh_teacher(teacher), example_input=x)

    class FakeTrainer:
        model = TinyNet(4)
        device = torch.device("cpu")

    with pytest.raises(DistillError, match="not the student"):
        d.on_fit_start(FakeTrainer())
    FakeTrainer.model = nn.Sequential(d.student)  # a wrapper around the student is fine
    d.on_fit_start(FakeTrainer())
    d.close()


def test_registry_kd_teacher_to_kd_student_hint():
    models = pytest.importorskip("engine.models")
    if not hasattr(models, "build"):
        pytest.skip("engine.models.build not available yet")
    teacher = models.build("kd_teacher", num_classes=10)
    student = models.build("kd_student", num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    features = [{"type": "hint", "student": "features", "teacher": "features", "regressor": "3x3"}]
    with Distiller(student, teacher, features=features, example_input=x) as d:
        loss, terms = d(student(x), x, y)
        loss.backward()
        assert {"ce", "kd", "hint:features", "loss"} == set(terms)
        assert all(p.grad is not None for p in d.parameters())
    assert all_hooks(student, teacher) == []


def test_adapter_state_round_trips_and_mismatch_is_explained(teacher):
    x = torch.randn(2, 3, 8, 8)
    hint = [{"type": "hint", "student": "features", "teacher": "features", "regressor": "3x3"}]
    with Distiller(TinyNet(4), fresh_teacher(teacher), features=hint, example_input=x) as a:
        with torch.no_grad():
            a.adapters[0].proj.weight.fill_(0.5)
        state = a.state_dict()
    assert all(k.startswith("0.proj.") for k in state)
    with Distiller(TinyNet(4), fresh_teacher(teacher), features=hint, example_input=x) as b:
        b.load_state_dict(state)
        assert torch.equal(b.adapters[0].proj.weight, state["0.proj.weight"])
    hint[0]["regressor"] = "1x1"
    with Distiller(TinyNet(4), fresh_teacher(teacher), features=hint, example_input=x) as c:
        with pytest.raises(DistillError, match="same teacher, student and features"):
            c.load_state_dict(state)


_HINT = [{"type": "hint", "student": "features", "teacher": "features"}]


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same weights on every rank, as DDP has
        teacher, student = TinyNet(8), TinyNet(4)
        x, y = make_data(8, seed=10 + rank)  # different data per rank
        d = Distiller(student, teacher, kd=None, features=_HINT, example_input=x)
        loss, _ = d(student(x), x, y)
        loss.backward()
        local = [p.grad.clone() for p in d.parameters()]
        d.after_backward(None)
        synced = [p.grad.clone() for p in d.parameters()]
        d.close()
        torch.save({"local": local, "synced": synced}, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_after_backward_averages_adapter_grads_over_ranks(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert not torch.allclose(r0["local"][0], r1["local"][0])
    for l0, l1, s0, s1 in zip(r0["local"], r1["local"], r0["synced"], r1["synced"], strict=True):
        torch.testing.assert_close(s0, s1)
        torch.testing.assert_close(s0, (l0 + l1) / 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_distiller_on_cuda_with_fp16_autocast_and_scaler(teacher):
    dev = torch.device("cuda")
    student = TinyNet(4, stride=2)
    x, y = make_data(16, seed=6)
    x, y = x.to(dev), y.to(dev)
    features = [{"type": "hint", "student": "features", "teacher": "features", "regressor": "3x3"}]
    with Distiller(
        student, fresh_teacher(teacher), features=features, example_input=x, device=dev
    ) as d:
        assert all(p.device.type == "cuda" for p in d.parameters())
        opt = torch.optim.SGD(list(student.parameters()) + d.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            loss, terms = d(student(x), x, y)
        assert loss.dtype == torch.float32 and math.isfinite(terms["loss"])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
