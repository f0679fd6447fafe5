"""InteractionMachine (DeepIM) against an explicit sum over every k-subset of fields, and against FuxiCTR's
closed-form power-sum expressions for orders 2..5."""

from __future__ import annotations

import itertools

import pytest
import torch

from bars.models.layers import InteractionMachine


def subset_terms(x: torch.Tensor, order: int) -> torch.Tensor:
    """[e_1, ..., e_K]: e_k = sum over k-subsets of fields of the element-wise product (slow and plain)."""
    b, f, d = x.shape
    out = []
    for k in range(1, order + 1):
        e = torch.zeros(b, d, dtype=x.dtype)
        for subset in itertools.combinations(range(f), k):
            prod = torch.ones(b, d, dtype=x.dtype)
            for i in subset:
                prod = prod * x[:, i]
            e = e + prod
        out.append(e)
    return torch.cat(out, dim=-1)


def closed_forms(x: torch.Tensor, order: int) -> torch.Tensor:
    """FuxiCTR's InteractionMachine formulas, written out."""
    p = [None] + [(x**j).sum(dim=1) for j in range(1, 6)]
    forms = [
        p[1],
        (p[1] ** 2 - p[2]) / 2,
        (p[1] ** 3 - 3 * p[1] * p[2] + 2 * p[3]) / 6,
        (p[1] ** 4 - 6 * p[1] ** 2 * p[2] + 3 * p[2] ** 2 + 8 * p[1] * p[3] - 6 * p[4]) / 24,
        (p[1] ** 5 - 10 * p[1] ** 3 * p[2] + 20 * p[1] ** 2 * p[3] - 30 * p[1] * p[4] - 20 * p[2] * p[3]
         + 15 * p[1] * p[2] ** 2 + 24 * p[5]) / 120,
    ]
    return torch.cat(forms[:order], dim=-1)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_terms_are_the_subset_sums_and_fuxictr_closed_forms(order):
    torch.manual_seed(order)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    im = InteractionMachine(3, order).double()
    got = im.terms(x)
    assert got.shape == (4, order * 3)
    torch.testing.assert_close(got, subset_terms(x, order), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, closed_forms(x, order), rtol=1e-10, atol=1e-10)


def test_output_is_fc_of_batch_normed_terms():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 4)
    im = InteractionMachine(4, 3, batch_norm=True).train()
    assert im.fc.in_features == 12 and im.bn.num_features == 12
    t = im.terms(x)
    want = im.fc(torch.nn.functional.batch_norm(t, None, None, im.bn.weight, im.bn.bias, training=True))
    torch.testing.assert_close(im(x), want)
    plain = InteractionMachine(4, 2)
    assert plain.bn is None
    torch.testing.assert_close(plain(x), plain.fc(plain.terms(x)))


@pytest.mark.parametrize("order", [0, 6])
def test_order_out_of_range_is_an_error(order):
    with pytest.raises(ValueError, match="order must be in 1..5"):
        InteractionMachine(4, order)
