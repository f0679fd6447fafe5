"""Holographic pairwise interactions (HFM, Tay et al. AAAI 2019): compressed outer products of two embeddings
by circular convolution or circular correlation, computed with the FFT (training, as FuxiCTR) or, for export, by
a sum of circular shifts (the same sums without FFT, which ONNX cannot express)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

HolographicType = Literal["hadamard_product", "circular_convolution", "circular_correlation"]
HOLOGRAPHIC_TYPES: tuple[str, ...] = ("hadamard_product", "circular_convolution", "circular_correlation")


class HolographicInteraction(nn.Module):
    """``[B, F, D] -> [B, P, D]``, one vector per field pair ``i < j`` (row-major, FuxiCTR's ``triu_indices``):

    - ``hadamard_product``: ``a * b``;
    - ``circular_convolution``: ``[a (*) b]_k = sum_i a_i b_{(k - i) mod D}`` = ``ifft(fft(a) fft(b))``;
    - ``circular_correlation``: ``[a (star) b]_k = sum_i a_i b_{(i + k) mod D}`` = ``ifft(conj(fft(a)) fft(b))``.

    FuxiCTR multiplies full complex FFTs and keeps the real part of the inverse; for real inputs that equals the
    real-input transform used here (``rfft``/``irfft`` with ``n = D``), up to float rounding.

    ``export_friendly`` (False; ``bars.export`` sets it while tracing for ONNX, whose opset has no FFT): the
    same sums computed directly, ``sum_s a_s * roll(b, +-s)`` over the D shifts (O(D^2) per pair, the memory of
    one ``[B, P, D]`` tensor); equal to the FFT path up to float32 rounding (tests/test_layers_holographic.py).
    """

    export_friendly: bool = False

    def __init__(self, num_fields: int, interaction_type: str = "circular_convolution") -> None:
        super().__init__()
        if interaction_type not in HOLOGRAPHIC_TYPES:
            raise ValueError(f"interaction_type {interaction_type!r} is not one of {HOLOGRAPHIC_TYPES}")
        if num_fields < 2:
            raise ValueError(f"pairwise interactions need at least 2 fields, got {num_fields}")
        self.interaction_type = interaction_type
        pairs = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("left", pairs[0].clone(), persistent=False)
        self.register_buffer("right", pairs[1].clone(), persistent=False)
        self.num_pairs = pairs.shape[1]

    def extra_repr(self) -> str:
        return f"interaction_type={self.interaction_type!r}, num_pairs={self.num_pairs}"

    def forward(self, emb: Tensor) -> Tensor:
        a, b = emb[:, self.left], emb[:, self.right]  # (advanced indexing: a much faster backward on CPU)
        if self.interaction_type == "hadamard_product":
            return a * b
        d = emb.shape[-1]
        if self.export_friendly:
            return circular_shift_sum(a, b, self.interaction_type == "circular_correlation")
        fa, fb = torch.fft.rfft(a, dim=-1), torch.fft.rfft(b, dim=-1)
        if self.interaction_type == "circular_correlation":
            fa = fa.conj()
        return torch.fft.irfft(fa * fb, n=d, dim=-1)


def circular_shift_sum(a: Tensor, b: Tensor, correlation: bool) -> Tensor:
    """Circular convolution ``c_k = sum_s a_s b_{(k - s) mod D}`` (or, ``correlation``, ``c_k = sum_s a_s
    b_{(s + k) mod D}``) over the last axis, without FFT: D shifted copies of ``b`` weighted by ``a``'s entries."""
    d = int(a.shape[-1])
    out = a[..., :1] * b
    for s in range(1, d):
        out = out + a[..., s : s + 1] * torch.roll(b, -s if correlation else s, dims=-1)
    return out
