"""BilinearInteraction against an explicit loop over field pairs with one matrix per type, and its two inits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bars.models.layers import BilinearInteraction

F, D = 5, 3


def explicit(e: torch.Tensor, weight: torch.Tensor, bilinear_type: str) -> torch.Tensor:
    out = []
    for k, (i, j) in enumerate(itertools.combinations(range(F), 2)):
        if bilinear_type == "field_all":
            w = weight
        elif bilinear_type == "field_each":
            w = weight[i]
        else:
            w = weight[k]
        out.append((e[:, i] @ w) * e[:, j])
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_equals_explicit_pair_loop(bilinear_type):
    torch.manual_seed(0)
    layer = BilinearInteraction(F, D, bilinear_type).double()
    shapes = {"field_all": (D, D), "field_each": (F, D, D), "field_interaction": (10, D, D)}
    assert layer.weight.shape == shapes[bilinear_type]
    e = torch.randn(4, F, D, dtype=torch.float64, requires_grad=True)
    out = layer(e)
    assert out.shape == (4, 10, D)
    assert torch.allclose(out, explicit(e, layer.weight, bilinear_type))
    out.sum().backward()
    assert layer.weight.grad is not None and torch.any(layer.weight.grad != 0)


def test_inits_tensor_vs_matrix():
    torch.manual_seed(0)
    d, f = 16, 20
    p = f * (f - 1) // 2
    tensor = BilinearInteraction(f, d, "field_interaction", init="tensor").weight
    matrix = BilinearInteraction(f, d, "field_interaction", init="matrix").weight
    # xavier over [P, D, D]: fan_in = D*D, fan_out = P*D; per D x D matrix: fan_in = fan_out = D
    assert tensor.std().item() == pytest.approx(math.sqrt(2.0 / (d * d + p * d)), rel=0.05)
    assert matrix.std().item() == pytest.approx(math.sqrt(1.0 / d), rel=0.05)
    every = BilinearInteraction(f, d, "field_all", init="matrix").weight
    assert every.std().item() == pytest.approx(math.sqrt(1.0 / d), rel=0.1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="bilinear_type 'pairs' is not one of"):
        BilinearInteraction(F, D, "pairs")
    with pytest.raises(ValueError, match="init 'zeros' is not one of"):
        BilinearInteraction(F, D, "field_all", init="zeros")
