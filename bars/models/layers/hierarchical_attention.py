"""InterHAt's pieces (Li et al. WSDM 2020): a transformer encoder block over the fields and the hierarchical
attentional aggregation that builds interactions of increasing order from it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from bars.models.layers.core import Dropout, LayerNorm

HeadSplit = Literal["reshape", "per_head"]
HEAD_SPLITS: tuple[str, ...] = ("reshape", "per_head")


class TransformerSelfAttention(nn.Module):
    """Multi-head self-attention over fields ``[B, F, D] -> [B, F, D]`` as FuxiCTR's InterHAt has it:

        Q, K, V = X W_q, X W_k, X W_v             # [B, F, H * A], no biases; A = attention_dim per head
        O = softmax(Q_h K_h^T / sqrt(A)) V_h       # per head, dropout on the attention weights
        O = ReLU(O W_res)  (W_res: H*A -> D, only when H * A != D)
        out = LayerNorm(Dropout(O) + X)            # residual and LayerNorm optional

    ``head_split`` says how ``[B, F, H * A]`` becomes heads:
    - ``"reshape"`` (default, FuxiCTR): ``view(B * H, F, A)`` of the contiguous projection. With ``H > 1`` a
      "head" is then a block of ``F * A`` consecutive values, i.e. the A-chunks of fields ``h F / H ..``: tokens
      mix fields and heads. This is what produced BARS's numbers (with H = 1 it is the standard split).
    - ``"per_head"``: the standard split, head h = columns ``h A .. (h + 1) A`` of every field.
    Parameter names follow FuxiCTR (``W_q``, ``W_k``, ``W_v``, ``W_res``, ``layer_norm``).
    """

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        use_residual: bool = True,
        layer_norm: bool = True,
        head_split: str = "reshape",
    ) -> None:
        super().__init__()
        if head_split not in HEAD_SPLITS:
            raise ValueError(f"head_split {head_split!r} is not one of {HEAD_SPLITS}")
        self.attention_dim = attention_dim
        self.num_heads = num_heads
        self.output_dim = num_heads * attention_dim
        self.head_split = head_split
        self.use_residual = use_residual
        self.scale = attention_dim**0.5
        self.W_q = nn.Linear(input_dim, self.output_dim, bias=False)
        self.W_k = nn.Linear(input_dim, self.output_dim, bias=False)
        self.W_v = nn.Linear(input_dim, self.output_dim, bias=False)
        self.W_res = nn.Linear(self.output_dim, input_dim, bias=False) if self.output_dim != input_dim else None
        self.attention_dropout = Dropout(dropout) if dropout > 0 else None
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.layer_norm = LayerNorm(input_dim) if layer_norm else None

    def _heads(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape
        if self.head_split == "reshape":
            return x.reshape(b * self.num_heads, f, self.attention_dim)
        return x.view(b, f, self.num_heads, self.attention_dim).transpose(1, 2).reshape(b * self.num_heads, f, -1)

    def _merge(self, x: Tensor, b: int) -> Tensor:
        f = x.shape[1]
        if self.head_split == "reshape":
            return x.reshape(b, f, self.output_dim)
        return x.view(b, self.num_heads, f, self.attention_dim).transpose(1, 2).reshape(b, f, self.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        q, k, v = self._heads(self.W_q(x)), self._heads(self.W_k(x)), self._heads(self.W_v(x))
        att = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / self.scale, dim=-1)
        if self.attention_dropout is not None:
            att = self.attention_dropout(att)
        out = self._merge(torch.bmm(att, v), b)
        if self.W_res is not None:
            out = self.W_res(out)
        out = torch.relu(out)
        if self.dropout is not None:
            out = self.dropout(out)
        if self.use_residual:
            out = out + x
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out


class PositionwiseFeedForward(nn.Module):
    """``LayerNorm(Linear(ReLU(Linear(x))) + x)`` over the last axis (FuxiCTR's InterHAt ``FeedForwardNetwork``:
    ``ffn`` = Linear(D, hidden) -> ReLU -> Linear(hidden, D); residual and LayerNorm optional)."""

    def __init__(self, dim: int, hidden_dim: int, use_residual: bool = True, layer_norm: bool = True) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
        self.use_residual = use_residual
        self.layer_norm = LayerNorm(dim) if layer_norm else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.ffn(x)
        if self.use_residual:
            out = out + x
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out


class AttentionalAggregation(nn.Module):
    """``[B, N, D] -> [B, D]``: ``sum_n softmax_n(w^T ReLU(W x_n + b)) x_n`` (FuxiCTR's ``agg``: Linear(D, hidden)
    -> ReLU -> Linear(hidden, 1, bias=False) -> Softmax over N)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.agg = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.agg(x), dim=1)  # [B, N, 1]
        return (weights * x).sum(dim=1)


class HierarchicalAttention(nn.Module):
    """InterHAt's hierarchical attention ``[B, F, D] -> [B, D]`` over the encoded fields ``X1``:

        X_1 = X1;  u_p = Agg_p(X_p);  X_{p+1} = u_p * X1 + X_p   (p = 1 .. order; u_p broadcast over fields)
        u = Agg_score([u_1, ..., u_order])

    ``u_p`` summarises the order-(p+1) interactions. ``aggregation_layers[p]`` and ``attentional_score`` are
    :class:`AttentionalAggregation` blocks (FuxiCTR's names)."""

    def __init__(self, dim: int, hidden_dim: int, order: int) -> None:
        super().__init__()
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.aggregation_layers = nn.ModuleList(AttentionalAggregation(dim, hidden_dim) for _ in range(order))
        self.attentional_score = AttentionalAggregation(dim, hidden_dim)

    def forward(self, x1: Tensor) -> Tensor:
        xp = x1
        us = []
        last = len(self.aggregation_layers) - 1
        for p, agg in enumerate(self.aggregation_layers):
            u = agg(xp)
            us.append(u)
            if p != last:
                xp = u.unsqueeze(1) * x1 + xp
        return self.attentional_score(torch.stack(us, dim=1))
