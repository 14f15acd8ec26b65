"""gamma_stats: per-BatchNorm |gamma|, affine=False handling, and the errors for models slimming cannot use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import PruneError
from engine.slim.gamma import gamma_stats


def test_abs_gamma_per_layer_in_module_order():
    model = nn.Sequential(
        nn.Conv2d(3, 3, 1),
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 2, 1),
        nn.BatchNorm2d(2, affine=False),
        nn.Conv2d(2, 4, 1),
        nn.BatchNorm2d(4),
    )
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-0.5, 0.25, 0.0]))
        model[5].weight.copy_(torch.tensor([1.0, -2.0, 3.0, -4.0]))
    stats = gamma_stats(model)
    assert stats.layers == ["1", "5"]
    assert stats.skipped == {"3": "affine=False (no gamma)"}
    assert stats.gammas["1"].dtype == np.float32
    np.testing.assert_array_equal(stats.gammas["1"], [0.5, 0.25, 0.0])
    np.testing.assert_array_equal(stats.gammas["5"], [1, 2, 3, 4])
    assert stats.counts == {"1": 3, "5": 4}
    assert stats.total == 7
    np.testing.assert_array_equal(stats.all(), [0.5, 0.25, 0.0, 1, 2, 3, 4])


def test_no_batchnorm_names_alternatives():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(PruneError, match="no BatchNorm") as err:
        gamma_stats(model)
    assert "magnitude" in str(err.value) and "sparse-train" in str(err.value)


def test_a_model_without_batchnorm_is_told_so_first():
    from zoo import LeNet  # biased convs and no BatchNorm: a plain LeNet, not a folded export

    with pytest.raises(PruneError) as err:
        gamma_stats(LeNet())
    text = str(err.value)
    assert text.startswith("LeNet has no BatchNorm layers, so network slimming has nothing to score")
    assert text.index("nothing to score") < text.index("folded")  # the folded-export case is only a hint


def test_only_non_affine_batchnorm_is_an_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False))
    with pytest.raises(PruneError, match="affine=False"):
        gamma_stats(model)
