"""AFN's logarithmic transformation layer (Cheng, Shen, Huang, AAAI 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LogarithmicTransformation(nn.Module):
    """``[B, F, D] -> [B, L, D]``: ``L`` logarithmic neurons, each an arbitrary-order cross feature
    ``y_j = exp(sum_f w_jf * ln|e_f|)`` = ``prod_f |e_f| ** w_jf`` (element-wise over D), as FuxiCTR computes it:

        z = BN_F(ln(max(|e|, clamp_min)))      # BatchNorm1d over the F fields (statistics over B and D)
        y = BN_L(exp(W z))                     # W: [L, F], no bias; BatchNorm1d over the L neurons

    ``clamp_min`` is 1e-5 in FuxiCTR ("better than 1e-7 suggested in paper"). Both batch norms are always on
    (FuxiCTR's ``batch_norm`` flag only concerns the MLPs). Parameter names follow FuxiCTR's AFN:
    ``log_batch_norm``, ``coefficient_W`` (an ``nn.Linear(F, L, bias=False)``; ``W z`` is computed as one
    matmul over the field axis, the same map as FuxiCTR's transpose-Linear-transpose), ``exp_batch_norm``.
    """

    def __init__(self, num_fields: int, num_neurons: int, clamp_min: float = 1e-5) -> None:
        super().__init__()
        if num_fields < 1 or num_neurons < 1:
            raise ValueError(f"need >= 1 field and >= 1 neuron, got {num_fields} and {num_neurons}")
        if clamp_min <= 0:
            raise ValueError(f"clamp_min must be > 0 (log of it is taken), got {clamp_min}")
        self.clamp_min = clamp_min
        self.log_batch_norm = nn.BatchNorm1d(num_fields)
        self.coefficient_W = nn.Linear(num_fields, num_neurons, bias=False)
        self.exp_batch_norm = nn.BatchNorm1d(num_neurons)

    @property
    def num_neurons(self) -> int:
        return self.coefficient_W.out_features

    def forward(self, emb: Tensor) -> Tensor:
        z = self.log_batch_norm(torch.log(emb.abs().clamp(min=self.clamp_min)))
        return self.exp_batch_norm(torch.exp(torch.matmul(self.coefficient_W.weight, z)))
