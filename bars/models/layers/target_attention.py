"""Target attention over a behaviour sequence: DIN's local activation unit (and its Dice activation, in core)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import MLP, activation


class DINAttention(nn.Module):
    """DIN's activation unit (Zhou et al., KDD 2018, section 4.3), as FuxiCTR 2.3.10's ``DIN_Attention``.

    For target ``t`` [B, d] and history ``h`` [B, L, d] with mask ``m`` [B, L] (true = a behaviour):
    ``a_j = MLP([t, h_j, t - h_j, t * h_j])`` (hidden layers ``units`` with ``hidden_activation``, ``dropout``
    after each, no batch norm; one output unit, then ``output_activation`` when given), ``a_j <- a_j * m_j``;
    with ``use_softmax`` the weights are ``softmax(a + (-1e9) * (1 - m))`` over j, as FuxiCTR (masked positions
    keep the product's 0 plus -1e9); the output is ``sum_j a_j h_j`` [B, d]. Without softmax the weights are not
    normalised (the paper's choice, to keep the intensity of the user's interests). A history with no behaviour
    gives zero (softmax: the uniform average of the padding rows, i.e. zero too, the padding row being zero).
    """

    def __init__(self, dim: int, units: Sequence[int] = (64,), hidden_activation: str = "dice",
                 output_activation: str | None = None, dropout: float = 0.0, use_softmax: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.use_softmax = use_softmax
        self.mlp = MLP(4 * dim, units, hidden_activation, batch_norm=False, dropout=dropout, output_dim=1)
        self.output_activation = activation(output_activation) if output_activation else None

    def forward(self, target: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        b, length, d = history.shape
        # The first Linear on [t, h, t - h, t * h] is computed as t (W_t + W_d) + h (W_h - W_d) + (t * h) W_p:
        # the same function and parameters without building the [B * L, 4d] input, and the target's part once per
        # row instead of once per behaviour (the attention is most of DIN's step).
        first = self.mlp.net[0]
        w_t, w_h, w_d, w_p = first.weight.split(d, dim=1)
        t = target.unsqueeze(1)
        z = F.linear(history, w_h - w_d) + F.linear(t * history, w_p) + F.linear(t, w_t + w_d, first.bias)
        w = self.mlp.net[1:](z.view(-1, first.out_features))  # a constant width, for the ONNX exporter
        if self.output_activation is not None:
            w = self.output_activation(w)
        m = mask.to(w.dtype)
        w = w.view(b, length) * m
        if self.use_softmax:
            w = (w + -1.0e9 * (1 - m)).softmax(dim=-1)
        return torch.bmm(w.unsqueeze(1), history).squeeze(1)
