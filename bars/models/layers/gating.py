"""FinalMLP pieces: stream-specific feature selection gates and multi-head bilinear fusion."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models.layers.core import MLP
from bars.models.layers.embedding import FeatureEmbedding


# ------------------------------------------------------------------------------------------------------------
# FinalMLP pieces
# ------------------------------------------------------------------------------------------------------------
class FeatureSelection(nn.Module):
    """FinalMLP's stream-specific feature gating: ``gate = 2 * sigmoid(MLP(context))`` of width ``F * D``
    multiplies the flat embedding. The context is the embedding of ``context`` fields (own table, as FuxiCTR)
    or, when empty, a learned bias vector of width ``dim``.

    ``bias_init`` is that bias's initialisation: ``"zeros"`` as FuxiCTR (then, with zero Linear biases, every
    ReLU of the gate MLP sits at 0 and gets no gradient: only the gate's output bias learns, so the gate is one
    learned vector per stream); ``"normal"`` draws N(0, 1) so that the gate MLP trains (docs/fidelity.md)."""

    BIAS_INITS = ("zeros", "normal")

    def __init__(
        self,
        spec: FeatureSpec,
        dim: int,
        flat_dim: int,
        hidden_units: Sequence[int],
        context: Sequence[str],
        bias_init: str = "zeros",
    ) -> None:
        super().__init__()
        if bias_init not in self.BIAS_INITS:
            raise ValueError(f"context bias_init {bias_init!r} is not one of {self.BIAS_INITS}")
        self.bias_init = bias_init
        self.context = FeatureEmbedding(spec, dim, fields=list(context)) if context else None
        self.ctx_bias = None if context else nn.Parameter(torch.zeros(1, dim))
        in_dim = dim * max(1, len(context))
        self.gate = MLP(in_dim, hidden_units, "relu", batch_norm=False, dropout=0.0, output_dim=flat_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.ctx_bias is not None:
            if self.bias_init == "normal":
                nn.init.normal_(self.ctx_bias, 0.0, 1.0)
            else:
                nn.init.zeros_(self.ctx_bias)

    def forward(self, batch: dict[str, Tensor], flat: Tensor) -> Tensor:
        if self.context is not None:
            ctx = self.context.flat(batch)
        else:
            assert self.ctx_bias is not None
            ctx = self.ctx_bias.expand(flat.shape[0], -1)
        return flat * (2.0 * torch.sigmoid(self.gate(ctx)))


class BilinearFusion(nn.Module):
    """FinalMLP's multi-head bilinear fusion of two stream outputs ``x [B, dx]``, ``y [B, dy]``:
    ``w_x.x + b_x + w_y.y + b_y + sum_h x_h^T W_h y_h``, heads splitting x and y into equal chunks. Output [B, 1]."""

    def __init__(self, x_dim: int, y_dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(f"stream widths {x_dim}, {y_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.hx, self.hy = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1)  # its own bias too, as FuxiCTR (two biases, both initialised 0)
        self.w_xy = nn.Parameter(torch.empty(num_heads, self.hx, self.hy))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # xavier-normal of the (heads*hx*hy, 1) matrix FuxiCTR stores
        nn.init.normal_(self.w_xy, 0.0, math.sqrt(2.0 / (self.w_xy.numel() + 1)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        b = x.shape[0]
        # per head h: (x_h W_h) . y_h, summed over heads (FuxiCTR's sums, in its order). One [H, B, hx] x [H, hx, hy]
        # batched matmul: the broadcast `x_h [B, H, 1, hx] @ W [H, hx, hy]` (FuxiCTR's form, and ours before)
        # materialised W for every row and took 15-20x longer, forward and backward (issue 16)
        xw = torch.bmm(x.view(b, self.num_heads, self.hx).transpose(0, 1), self.w_xy)  # [H, B, hy]
        bil = (xw * y.view(b, self.num_heads, self.hy).transpose(0, 1)).sum(dim=2).sum(dim=0).unsqueeze(1)
        return self.w_x(x) + self.w_y(y) + bil
