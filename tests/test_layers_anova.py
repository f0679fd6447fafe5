"""ANOVA kernels (Newton's identities) against the explicit sum over every combination of fields."""

from __future__ import annotations

import itertools

import pytest
import torch

from bars.models.layers import AnovaKernel, anova_kernels


def explicit(e: torch.Tensor, order: int) -> torch.Tensor:
    out = torch.zeros(e.shape[0], e.shape[2], dtype=e.dtype)
    for combo in itertools.combinations(range(e.shape[1]), order):
        prod = e[:, combo[0]]
        for i in combo[1:]:
            prod = prod * e[:, i]
        out = out + prod
    return out


@pytest.mark.parametrize("fields", [3, 7, 12])
def test_kernels_equal_explicit_combinations_float64(fields):
    e = torch.randn(4, fields, 5, generator=torch.Generator().manual_seed(fields), dtype=torch.float64)
    ks = anova_kernels(e, 5)
    assert len(ks) == 5
    for t, k in enumerate(ks, start=1):
        assert k.shape == (4, 5)
        assert torch.allclose(k, explicit(e, t), rtol=1e-10, atol=1e-12), t


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_float32_precision_and_module(order):
    """float32 against the float64 explicit sum: relative error bounded (Newton's identities cancel terms)."""
    e64 = torch.randn(64, 10, 8, generator=torch.Generator().manual_seed(order), dtype=torch.float64)
    ref = explicit(e64, order)
    got = anova_kernels(e64.float(), order)[-1].double()
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5
    # tiny embeddings (BARS initialisation N(0, 1e-4)) stay accurate too
    small = e64 * 1e-4
    got_small = anova_kernels(small.float(), order)[-1].double()
    ref_small = explicit(small, order)
    assert ((got_small - ref_small).abs().max() / ref_small.abs().max()).item() < 1e-5
    out = AnovaKernel(order)(e64)
    assert out.shape == (64, 1) and torch.allclose(out.squeeze(1), ref.sum(1))


def test_order_two_is_the_fm_term_and_gradients():
    e = torch.randn(3, 6, 4, requires_grad=True)
    fm = 0.5 * ((e.sum(1) ** 2) - (e**2).sum(1)).sum(1, keepdim=True)
    assert torch.allclose(AnovaKernel(2)(e), fm, atol=1e-5)
    AnovaKernel(3)(e).sum().backward()
    assert e.grad is not None and torch.any(e.grad != 0)


def test_bad_order_raises():
    with pytest.raises(ValueError, match="order must be >= 2"):
        AnovaKernel(1)
    with pytest.raises(ValueError, match="order must be >= 1"):
        anova_kernels(torch.zeros(1, 2, 3), 0)
