"""Holographic pairwise interactions (HFM, Tay et al. AAAI 2019): compressed outer products of two embeddings
by circular convolution or circular correlation, computed with the FFT."""

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
    """

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
        fa, fb = torch.fft.rfft(a, dim=-1), torch.fft.rfft(b, dim=-1)
        if self.interaction_type == "circular_correlation":
            fa = fa.conj()
        return torch.fft.irfft(fa * fb, n=d, dim=-1)
