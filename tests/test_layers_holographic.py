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


@pytest.mark.parametrize("kind", ["circular_convolution", "circular_correlation"])
@pytest.mark.parametrize("d", [1, 5, 16, 64])
def test_export_friendly_shift_sum_equals_the_fft_path(kind, d):
    """The FFT-free form that ONNX export traces: the defining sums exactly (float64) and the FFT path within
    float32 rounding (embeddings of the size trained models have, and of unit scale)."""
    torch.manual_seed(d)
    layer = HolographicInteraction(6, kind)
    for scale in (1e-2, 1.0):
        e = scale * torch.randn(32, 6, d)
        fft = layer(e)
        layer.export_friendly = True
        try:
            direct = layer(e)
            direct64 = layer(e.double())
        finally:
            layer.export_friendly = False
        assert (direct - fft).abs().max() <= 1e-6 * fft.abs().max()
        if d > 16:
            continue
        ref = torch.stack([circular(e.double()[:, i], e.double()[:, j], kind)
                           for i, j in zip(layer.left.tolist(), layer.right.tolist(), strict=True)], dim=1)
        assert torch.allclose(direct64, ref, atol=1e-12)


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
