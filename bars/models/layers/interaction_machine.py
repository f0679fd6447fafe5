"""DeepIM's interaction machine: all field interactions of orders 1..K through Newton's identities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

MAX_IM_ORDER = 5  # FuxiCTR's InteractionMachine supports orders 1..5


class InteractionMachine(nn.Module):
    """Interaction machine (Yu et al., DeepIM, CIKM 2020) over field embeddings ``x [B, F, D]``.

    Order ``k`` term, per embedding dimension: the elementary symmetric polynomial
    ``e_k = sum_{i_1 < ... < i_k} x_{i_1} * ... * x_{i_k}`` (all products of k distinct fields), computed from
    the power sums ``p_j = sum_f x_f^j`` by Newton's identities ``e_k = (1/k) sum_{j=1..k} (-1)^(j-1) e_{k-j} p_j``
    (``e_0 = 1``): ``e_1 = p_1``, ``e_2 = (p_1^2 - p_2)/2``, ``e_3 = (p_1^3 - 3 p_1 p_2 + 2 p_3)/6``, ... — the
    same values as FuxiCTR's closed forms for orders 2..5 (rounding aside). Output:
    ``fc(BN?([e_1, ..., e_K]))`` ``[B, 1]`` with ``fc = Linear(K * D, 1)`` (FuxiCTR ``im_layer.fc``, ``im_layer.bn``).
    """

    def __init__(self, embedding_dim: int, order: int = 2, batch_norm: bool = False) -> None:
        super().__init__()
        if not 1 <= order <= MAX_IM_ORDER:
            raise ValueError(f"interaction machine order must be in 1..{MAX_IM_ORDER}, got {order}")
        self.order = order
        self.bn = nn.BatchNorm1d(order * embedding_dim) if batch_norm else None
        self.fc = nn.Linear(order * embedding_dim, 1)

    def terms(self, x: Tensor) -> Tensor:
        """``[e_1, ..., e_K]`` concatenated: ``[B, K * D]``."""
        powers = [x.sum(dim=1)]
        q = x
        for _ in range(1, self.order):
            q = q * x
            powers.append(q.sum(dim=1))
        e: list[Tensor] = [torch.ones_like(powers[0])]
        for k in range(1, self.order + 1):
            acc = e[k - 1] * powers[0]
            for j in range(2, k + 1):
                term = e[k - j] * powers[j - 1]
                acc = acc - term if j % 2 == 0 else acc + term
            e.append(acc / k)
        return torch.cat(e[1:], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.terms(x)
        if self.bn is not None:
            out = self.bn(out)
        return self.fc(out)
