"""Explicit feature-interaction blocks: DCN cross networks, FM, CIN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class CrossNet(nn.Module):
    """DCN (v1) cross network: ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l`` (w_l a vector, b_l zero-initialised)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.w = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(input_dim)) for _ in range(num_layers))

    def reset_parameters(self) -> None:
        for b in self.b:
            nn.init.zeros_(b)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * w(x) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x
        return x


class FMInteraction(nn.Module):
    """Second-order FM term ``sum_{i<j} <e_i, e_j>`` via ``0.5 * ((sum e)^2 - sum e^2)`` summed over dim.
    Input ``[B, F, D]``, output ``[B, 1]``."""

    def forward(self, emb: Tensor) -> Tensor:
        s = emb.sum(dim=1)
        return 0.5 * (s * s - (emb * emb).sum(dim=1)).sum(dim=1, keepdim=True)


class CIN(nn.Module):
    """xDeepFM's Compressed Interaction Network. Layer k: ``Z = x_0 (outer, per dim) x_{k-1}`` of shape
    ``[B, F * H_{k-1}, D]``, compressed by a 1x1 convolution (here a Linear over the channel axis, the same map)
    into ``H_k`` feature maps; every layer's maps are sum-pooled over D, concatenated and mapped to
    ``output_dim`` by a Linear. No split-half (as FuxiCTR). Input ``[B, F, D]``."""

    def __init__(self, num_fields: int, hidden_units: Sequence[int], output_dim: int = 1) -> None:
        super().__init__()
        convs = []
        prev = num_fields
        for h in hidden_units:
            convs.append(nn.Linear(num_fields * prev, h))
            prev = h
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(sum(hidden_units), output_dim)

    def forward(self, x0: Tensor) -> Tensor:
        b, _, d = x0.shape
        x = x0
        pooled = []
        for conv in self.convs:
            z = torch.einsum("bhd,bmd->bhmd", x0, x).reshape(b, -1, d)  # [B, F*H, D]
            x = conv(z.transpose(1, 2)).transpose(1, 2)  # [B, H_k, D]
            pooled.append(x.sum(dim=-1))
        return self.fc(torch.cat(pooled, dim=-1))
