"""SqueezeExcitation against a hand computation with explicit weights."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import SqueezeExcitation


def test_by_hand_relu_and_sigmoid():
    e = torch.tensor([[[1.0, 3.0], [-2.0, 0.0], [4.0, 4.0]]])  # [1, 3, 2]: means 2, -1, 4
    for act in ("relu", "sigmoid"):
        se = SqueezeExcitation(3, reduction_ratio=2, excitation_activation=act)
        assert se.reduced_size == 1
        with torch.no_grad():
            se.excitation[0].weight.copy_(torch.tensor([[1.0, 1.0, 0.5]]))  # z -> 2 - 1 + 2 = 3
            se.excitation[2].weight.copy_(torch.tensor([[1.0], [-1.0], [0.5]]))  # 3 -> 3, -3, 1.5
        a = torch.tensor([3.0, -3.0, 1.5])
        a = torch.relu(a) if act == "relu" else torch.sigmoid(a)
        assert torch.allclose(se(e), e * a.view(1, 3, 1))


def test_reduced_size_floor_and_minimum_one():
    assert SqueezeExcitation(10, 3).reduced_size == 3
    assert SqueezeExcitation(10, 0.5).reduced_size == 20  # FuxiCTR: int(F / ratio); BARS searched 0.3..12
    assert SqueezeExcitation(2, 12).reduced_size == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="reduction_ratio must be > 0"):
        SqueezeExcitation(4, 0)
    with pytest.raises(ValueError, match="excitation_activation 'tanh' is not one of"):
        SqueezeExcitation(4, 2, "tanh")
