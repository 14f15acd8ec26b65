"""torchvision models (which need the detection environment's torchvision) prune to their plan and reload."""

from __future__ import annotations

import copy

import pytest
import torch

from engine import checkpoint
from engine.errors import PruneError

pytestmark = pytest.mark.detect

SHAPE = (3, 64, 64)  # small inputs keep tracing quick; the channel structure is the same as at 224


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf"])
def test_torchvision_model_prunes_to_its_plan_and_reloads(name, tmp_path):
    from engine.measure import count_params
    from engine.models import build
    from engine.slim.apply import apply_plan
    from engine.slim.plan import make_plan

    torch.manual_seed(0)
    model = build(f"torchvision:{name}", 10).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features) + 0.01
    plan = make_plan(model, percent=0.5, input_shape=SHAPE)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert count_params(pruned) == plan.totals["params_after"] < plan.totals["params_before"]
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    path = tmp_path / "p.pt"
    checkpoint.save(path, pruned, checkpoint.arch_dict(f"torchvision:{name}", 10), plan=plan.to_dict())
    again = checkpoint.load(path).model
    with torch.no_grad():
        assert (again(x) - pruned(x)).abs().max().item() == 0.0


def test_convnext_has_no_batchnorm_and_is_refused_with_the_reason():
    from engine.models import build
    from engine.slim.plan import make_plan

    model = build("torchvision:convnext_tiny", 10)
    with pytest.raises(PruneError, match="BatchNorm"):
        make_plan(model, percent=0.5, input_shape=SHAPE)
