"""HFM's holographic interactions against the defining sums over modular indices, and against FuxiCTR's
full-complex FFT formulation."""

from __future__ import annotations

import itertools

import pytest
import torch

from bars.models.layers import HolographicInteraction


def circular(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    d = a.shape[-1]
    out = torch.zeros_like(a)
    for k in range(d):
        for i in range(d):
            j = (k - i) % d if kind == "circular_convolution" else (i + k) % d
            out[..., k] += a[..., i] * b[..., j]
    return out


@pytest.mark.parametrize("kind", ["circular_convolution", "circular_correlation", "hadamard_product"])
@pytest.mark.parametrize("d", [5, 6])
def test_pairs_equal_defining_sums(kind, d):
    torch.manual_seed(0)
    e = torch.randn(3, 4, d, dtype=torch.float64)
    out = HolographicInteraction(4, kind)(e)
    pairs = list(itertools.combinations(range(4), 2))
    assert out.shape == (3, len(pairs), d)
    for p, (i, j) in enumerate(pairs):
        ref = e[:, i] * e[:, j] if kind == "hadamard_product" else circular(e[:, i], e[:, j], kind)
        assert torch.allclose(out[:, p], ref, atol=1e-10)


def test_equals_fuxictr_complex_fft_form():
    torch.manual_seed(1)
    e = torch.randn(4, 5, 10)
    layer = HolographicInteraction(5, "circular_correlation")
    a, b = e[:, layer.left], e[:, layer.right]
    ref = torch.fft.ifft(torch.fft.fft(a).conj() * torch.fft.fft(b)).real
    assert torch.allclose(layer(e), ref, atol=1e-5)
    conv = HolographicInteraction(5, "circular_convolution")
    assert torch.allclose(conv(e), torch.fft.ifft(torch.fft.fft(a) * torch.fft.fft(b)).real, atol=1e-5)


def test_gradients_flow_and_bad_type_is_rejected():
    e = torch.randn(2, 3, 4, requires_grad=True)
    HolographicInteraction(3, "circular_convolution")(e).sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()
    with pytest.raises(ValueError, match="interaction_type"):
        HolographicInteraction(3, "outer_product")
