"""InnerProductInteraction and field_pairs against explicit loops over field pairs."""

from __future__ import annotations

import itertools

import pytest
import torch

from bars.models.layers import InnerProductInteraction, field_pairs, num_pairs


def emb(b: int = 3, f: int = 5, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, f, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_field_pairs_follow_combinations_order():
    left, right = field_pairs(5)
    assert list(zip(left.tolist(), right.tolist(), strict=True)) == list(itertools.combinations(range(5), 2))
    assert num_pairs(5) == 10 and num_pairs(1) == 0
    assert field_pairs(1)[0].numel() == 0


def test_all_outputs_equal_explicit_pair_loops():
    e = emb()
    pairs = list(itertools.combinations(range(5), 2))
    inner = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in pairs], dim=1)
    elementwise = torch.stack([e[:, i] * e[:, j] for i, j in pairs], dim=1)
    bi = sum(e[:, i] * e[:, j] for i, j in pairs)
    got = {o: InnerProductInteraction(5, o)(e) for o in
           ("inner_product", "elementwise_product", "bi_interaction", "product_sum")}
    assert got["inner_product"].shape == (3, 10)
    assert torch.allclose(got["inner_product"], inner)
    assert got["elementwise_product"].shape == (3, 10, 4)
    assert torch.allclose(got["elementwise_product"], elementwise)
    assert got["bi_interaction"].shape == (3, 4)
    assert torch.allclose(got["bi_interaction"], bi)
    assert got["product_sum"].shape == (3, 1)
    assert torch.allclose(got["product_sum"].squeeze(1), inner.sum(1))


def test_gradients_flow_and_bad_arguments_raise():
    e = emb().requires_grad_(True)
    InnerProductInteraction(5, "inner_product")(e).sum().backward()
    assert e.grad is not None and torch.any(e.grad != 0)
    with pytest.raises(ValueError, match="output 'cosine' is not one of"):
        InnerProductInteraction(5, "cosine")
    with pytest.raises(ValueError, match="built for 4 fields got 5"):
        InnerProductInteraction(4, "inner_product")(emb())
