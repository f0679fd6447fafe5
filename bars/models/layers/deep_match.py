"""DMR's two relevance networks (Lyu et al., "Deep Match to Rank Model for Personalized Click-Through Rate
Prediction", AAAI 2020), as FuxiCTR 2.3.10's ``model_zoo/DMR/src/DMR.py`` computes them (``User2ItemNet``,
``Item2ItemNet``).

Both score every behaviour ``h_j`` [m] of a history [B, L, m] against a per-position query ``q_j`` [m] with an
attention MLP on ``[q_j, h_j, q_j - h_j, q_j * h_j]`` (hidden layers with ``activation``, ``dropout`` after each,
no batch norm, one output unit): ``a_j = MLP(...)``. The first Linear is computed on the split weight
``q (W_q + W_d) + h (W_h - W_d) + (q h) W_p`` (the same function and parameters as on the concatenation, without
the [B·L, 4m] input; as :class:`~bars.models.layers.DINAttention`).

- :class:`ItemToItemRelevance`: ``q_j = ReLU(W_q [t, p_j])`` from the target ``t`` and a position embedding
  ``p_j`` (``use_pos_emb``); returns the softmax-pooled history ``sum_j softmax_j(a) h_j`` (masked positions at
  -1e9, as FuxiCTR: a history with no behaviour gives the uniform average of its padding rows, i.e. zero) and the
  relevance ``r_i2i = sum_j a_j m_j`` (the raw scores of the behaviours summed).
- :class:`UserToItemRelevance`: ``q_j = ReLU(W_q p_j)`` from the position embedding alone (no context field); the
  user representation at position ``t`` is ``u_t = ReLU(W_o sum_j softmax_j(a) h_j)`` over the behaviours
  ``j <= t`` and ``t`` itself (causal, plus the diagonal, as FuxiCTR's ``get_mask``). DMR reads ``u_{L-1}`` (its
  inner product with the target's output embedding is ``r_u2i``) and, for the auxiliary loss, ``u_{L-2}``; only
  the rows asked for are computed (FuxiCTR computes all L rows and keeps those two).

Position embeddings are ``nn.Parameter`` zeros [max_len, pos_emb_dim] as FuxiCTR (never re-initialised there),
indexed by absolute position: the padding side of the data matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import MLP

MASKED_SCORE = -1.0e9  # FuxiCTR's fill for masked attention scores (not -inf: an all-masked row is uniform)


def pairwise_scores(mlp: MLP, query: Tensor, history: Tensor) -> Tensor:
    """``MLP([q, h, q - h, q * h])`` per position: ``query`` [B, L, m] or [L, m] (the same for every row),
    ``history`` [B, L, m] -> scores [B, L]."""
    b, length, m = history.shape
    first = mlp.net[0]
    w_q, w_h, w_d, w_p = first.weight.split(m, dim=1)
    z = F.linear(query, w_q + w_d, first.bias) + F.linear(history, w_h - w_d) + F.linear(query * history, w_p)
    return mlp.net[1:](z.reshape(-1, first.out_features)).view(b, length)


class _Relevance(nn.Module):
    def __init__(self, model_dim: int, units: Sequence[int], activation: str, dropout: float) -> None:
        super().__init__()
        self.model_dim = model_dim
        self.mlp = MLP(4 * model_dim, units, activation, batch_norm=False, dropout=dropout, output_dim=1)

    def reset_parameters(self) -> None:
        pos = getattr(self, "pos_emb", None)
        if pos is not None:
            with torch.no_grad():
                pos.zero_()


class ItemToItemRelevance(_Relevance):
    """DMR's Item-to-Item network (FuxiCTR ``Item2ItemNet`` without a context field): target ``t`` [B, m],
    history [B, L, m], mask [B, L] (true = a behaviour) -> ``(pooled [B, m], r_i2i [B, 1])``."""

    def __init__(self, model_dim: int, max_len: int, units: Sequence[int] = (80, 40), activation: str = "relu",
                 dropout: float = 0.0, use_pos_emb: bool = True, pos_emb_dim: int = 8) -> None:
        super().__init__(model_dim, units, activation, dropout)
        self.pos_emb = nn.Parameter(torch.zeros(max_len, pos_emb_dim)) if use_pos_emb else None
        self.query = nn.Linear(model_dim + (pos_emb_dim if use_pos_emb else 0), model_dim)

    def forward(self, target: Tensor, history: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # W_q [t, p_j] = W_t t + W_p p_j: the target's part once per row, the position's once per position
        w = self.query.weight
        q = F.linear(target, w[:, :self.model_dim]).unsqueeze(1)  # [B, 1, m]
        if self.pos_emb is not None:
            q = q + F.linear(self.pos_emb, w[:, self.model_dim:], self.query.bias)  # [B, L, m]
        else:
            q = q + self.query.bias
        q = torch.relu(q).expand_as(history)
        scores = pairwise_scores(self.mlp, q, history)
        weights = scores.masked_fill(~mask, MASKED_SCORE).softmax(dim=-1)
        pooled = torch.bmm(weights.unsqueeze(1), history).squeeze(1)
        relevance = (scores * mask.to(scores.dtype)).sum(dim=1, keepdim=True)
        return pooled, relevance


class UserToItemRelevance(_Relevance):
    """DMR's User-to-Item network (FuxiCTR ``User2ItemNet`` without a context field): history [B, L, m], mask
    [B, L] -> the user representations ``u_t`` [B, rows, m] at the last ``rows`` positions (t = L - rows ..
    L - 1; ``rows`` 1 or 2)."""

    def __init__(self, model_dim: int, max_len: int, units: Sequence[int] = (80, 40), activation: str = "relu",
                 dropout: float = 0.0, pos_emb_dim: int = 8) -> None:
        super().__init__(model_dim, units, activation, dropout)
        self.max_len = max_len
        self.pos_emb = nn.Parameter(torch.zeros(max_len, pos_emb_dim))
        self.query = nn.Linear(pos_emb_dim, model_dim)
        self.output = nn.Linear(model_dim, model_dim)
        # rows L-2 and L-1 of FuxiCTR's [L, L] mask: causal (j <= t) for behaviours, and the diagonal always
        t = torch.arange(max_len - 2, max_len).unsqueeze(1)
        j = torch.arange(max_len).unsqueeze(0)
        self.register_buffer("causal", (j <= t)[-min(2, max_len):], persistent=False)
        self.register_buffer("diagonal", (j == t)[-min(2, max_len):], persistent=False)

    def forward(self, history: Tensor, mask: Tensor, rows: int = 1) -> Tensor:
        if not 1 <= rows <= self.causal.size(0):
            raise ValueError(f"UserToItemRelevance: rows must be 1..{self.causal.size(0)}, got {rows}")
        q = torch.relu(self.query(self.pos_emb))  # [L, m], the same for every row
        scores = pairwise_scores(self.mlp, q, history)  # [B, L]
        allowed = (mask.unsqueeze(1) & self.causal[-rows:]) | self.diagonal[-rows:]  # [B, rows, L]
        weights = scores.unsqueeze(1).masked_fill(~allowed, MASKED_SCORE).softmax(dim=-1)
        return torch.relu(self.output(torch.bmm(weights, history)))
