"""DMIN's blocks (Xiao et al., "Deep Multi-Interest Network for Click-through Rate Prediction", CIKM 2020), as
FuxiCTR 2.3.10 ``model_zoo/DMIN/src/DMIN.py`` computes them: the behaviour refiner (multi-head self-attention over
the history), the multi-interest extractor (one more multi-head self-attention whose every head becomes an interest,
each pooled by its own target attention) and that target attention (DIN's unit with the target projected per
position together with a learned position embedding).

Masks (``interest_masks``): with ``keep`` the non-padding positions of the history, query ``i`` may attend key
``j`` when ``j <= i`` (causal) and (``j`` is kept or ``j == i``), FuxiCTR's ``DMIN.get_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.models.layers.behavior_transformer import MaskedSelfAttention, scaled_attention
from bars.models.layers.core import MLP, Dropout, LayerNorm


def interest_masks(seq: Tensor) -> tuple[Tensor, Tensor]:
    """For a history ``seq`` [B, L] (0 = padding): ``(keep [B, L], allowed [B, 1, L, L])``; ``allowed[b, 0, i, j]``
    is true when query ``i`` may attend key ``j``: ``j <= i`` and (``j`` is a behaviour or ``j == i``)."""
    keep = seq > 0
    pos = torch.arange(seq.size(1), device=seq.device)  # comparisons, not torch.eye/tril (ONNX Runtime: no bool EyeLike)
    allowed = (keep.unsqueeze(1) | (pos.unsqueeze(0) == pos.unsqueeze(1))) & (pos.unsqueeze(0) <= pos.unsqueeze(1))
    return keep, allowed.unsqueeze(1)


class BehaviorRefiner(nn.Module):
    """DMIN's behaviour refiner: ``s = LN(x + drop(MHA(x)))``, ``out = s + W_2 ReLU(W_1 s)`` (feed-forward width
    ``2 dim``; the residuals always on, the layer norm switchable, no norm after the feed-forward), torch's
    ``MultiheadAttention`` parameters and initialisation (:class:`MaskedSelfAttention`).

    ``mask="soft"`` (FuxiCTR): FuxiCTR hands ``nn.MultiheadAttention`` the float mask ``1 - allowed``, which torch
    *adds* to the attention scores, so a disallowed key gets ``+1`` on its score instead of being removed (a key
    that should be hidden is favoured by a factor e). ``mask="hard"``: the keys are removed (the evident intent)."""

    def __init__(self, dim: int, num_heads: int, attention_dropout: float = 0.0, dropout: float = 0.0,
                 layer_norm: bool = True, mask: str = "soft") -> None:
        super().__init__()
        if mask not in ("soft", "hard"):
            raise ValueError(f"BehaviorRefiner: mask must be 'soft' or 'hard', got {mask!r}")
        self.mask = mask
        self.attention = MaskedSelfAttention(dim, num_heads, attention_dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.dropout = Dropout(dropout)
        self.layer_norm = LayerNorm(dim) if layer_norm else None

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` [B, L, dim], ``allowed`` [B, 1, L, L] (:func:`interest_masks`) -> [B, L, dim]."""
        bias = allowed if self.mask == "hard" else (~allowed).to(x.dtype)
        s = self.dropout(self.attention(x, bias)) + x
        if self.layer_norm is not None:
            s = self.layer_norm(s)
        return self.ffn(s) + s


class PositionalTargetAttention(nn.Module):
    """DMIN's target attention. The target ``t`` [B, dim] is repeated per position and, with ``use_pos_emb``,
    concatenated with a learned position embedding ``p_j`` [L, pos_dim] (initialised to zero, as FuxiCTR, which
    leaves it untouched) and projected back: ``q_j = W [t, p_j] + b``. Scores ``a_j = MLP([q_j, h_j, q_j - h_j,
    q_j * h_j])`` (hidden layers with ``activation`` and ``dropout``, no batch norm, one output unit), disallowed
    positions set to -1e9, softmax over j; output ``sum_j a_j h_j`` [B, dim]. A history with no behaviour gets the
    uniform average of its positions, as FuxiCTR."""

    def __init__(self, dim: int, seq_len: int, units: Sequence[int] = (80, 40), activation: str = "relu",
                 dropout: float = 0.0, use_pos_emb: bool = True, pos_emb_dim: int = 8) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(seq_len, pos_emb_dim)) if use_pos_emb else None
        self.proj = nn.Linear(dim + pos_emb_dim, dim) if use_pos_emb else None
        self.mlp = MLP(4 * dim, units, activation, batch_norm=False, dropout=dropout, output_dim=1)

    def reset_parameters(self) -> None:
        if self.pos_emb is not None:
            nn.init.zeros_(self.pos_emb)

    def forward(self, history: Tensor, target: Tensor, keep: Tensor) -> Tensor:
        b, length, d = history.shape
        q = target.unsqueeze(1).expand(-1, length, -1)
        if self.pos_emb is not None and self.proj is not None:
            q = self.proj(torch.cat([q, self.pos_emb.unsqueeze(0).expand(b, -1, -1)], dim=-1))
        z = torch.cat([q, history, q - history, q * history], dim=-1)
        scores = self.mlp(z.view(-1, 4 * d)).view(b, length)
        w = scores.masked_fill(~keep, -1.0e9).softmax(dim=-1)
        return torch.bmm(w.unsqueeze(1), history).squeeze(1)


class MultiInterestExtractor(nn.Module):
    """DMIN's multi-interest extractor. One bias-free projection ``W_qkv`` [3 dim, dim] gives queries, keys and
    values split into ``num_heads`` heads of ``dim / num_heads``; scaled dot-product attention under ``allowed``
    (disallowed keys removed; dropout on the weights). Head ``k`` (its own parameters): ``s = LN_k(x +
    drop(W_o,k head_k))`` with ``W_o,k`` [dim, dim / num_heads] bias-free, ``u = s + FFN_k(s)`` (``2 dim`` wide,
    ReLU), and its interest is ``PositionalTargetAttention_k(u, target)`` [B, dim]. Returns the ``num_heads``
    interests."""

    def __init__(self, dim: int, num_heads: int, seq_len: int, attention_units: Sequence[int] = (80, 40),
                 attention_activation: str = "relu", attention_dropout: float = 0.0, dropout: float = 0.0,
                 layer_norm: bool = True, use_pos_emb: bool = True, pos_emb_dim: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiInterestExtractor: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        head = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.ModuleList(nn.Linear(head, dim, bias=False) for _ in range(num_heads))
        self.dropout = nn.ModuleList(Dropout(dropout) for _ in range(num_heads))
        self.layer_norm = nn.ModuleList(LayerNorm(dim) for _ in range(num_heads)) if layer_norm else None
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
                                 for _ in range(num_heads))
        self.target_attention = nn.ModuleList(
            PositionalTargetAttention(dim, seq_len, attention_units, attention_activation, attention_dropout,
                                      use_pos_emb, pos_emb_dim)
            for _ in range(num_heads))

    def forward(self, x: Tensor, target: Tensor, keep: Tensor, allowed: Tensor) -> list[Tensor]:
        """``x`` [B, L, dim] (the refined history), ``target`` [B, dim], ``keep`` [B, L], ``allowed`` [B, 1, L, L]
        -> ``num_heads`` interests [B, dim]."""
        b, length, _ = x.shape
        q, k, v = (t.view(b, length, self.num_heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        heads = scaled_attention(q, k, v, allowed, self.attention_dropout if self.training else 0.0)
        interests = []
        for i in range(self.num_heads):
            s = self.dropout[i](self.out[i](heads[:, i])) + x
            if self.layer_norm is not None:
                s = self.layer_norm[i](s)
            u = self.ffn[i](s) + s
            interests.append(self.target_attention[i](u, target, keep))
        return interests
