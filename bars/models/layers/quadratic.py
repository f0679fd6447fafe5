"""QNN-alpha's quadratic layer (Li et al., "Revisiting Feature Interactions from the Perspective of Quadratic Neural
Networks for Click-through Rate Prediction", KDD 2025): a multi-head Khatri-Rao product of the input with a
learned projection of itself, plus the input.

Written from FuxiCTR's model_zoo/QNN/src/QNN_alpha.py (``QuadraticLayer``): the same parameters in the same layout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bars.models.layers.core import Dropout, ReLUDropout


class QuadraticLayer(nn.Module):
    """``x [B, F*E] -> [B, F*E]``, with ``H`` heads of width ``d = F*E/H`` and ``R`` rows:

        heads = x viewed [B, F, E], each field's E split into H equal parts, head h = [field 0 part h, field 1
                part h, ...]                                                        [B, H, d]
        P     = Dropout(ReLU(BN?(W x + b))) viewed [B, H, R, d]                     (W: [F*E*R, F*E])
        y     = (heads[:, :, None] * P).sum over R, laid out head by head [B, H*d] + x

    As FuxiCTR: the product is laid out head-major while the residual ``x`` is field-major (they coincide for one
    head), and the next layer reads the sum field-major again. ``sum_r heads * P_r`` is computed as
    ``heads * sum_r P_r`` (the same value; one product instead of R).

    ``relu=False`` leaves the ReLU out of ``P`` and ``residual=False`` the ``+ x`` (QIN's quadratic layer,
    salmon1802/QIN ``src/QIN_variety_v9.py``: ``P = Dropout(W x + b)``, ``y = x * sum_r P_r``; the residual, batch
    norm and activation come after the product, in :class:`~bars.models.layers.QuadraticInterestNetwork`)."""

    def __init__(self, num_fields: int, embedding_dim: int, num_row: int = 2, num_heads: int = 1,
                 batch_norm: bool = False, dropout: float = 0.0, *, relu: bool = True,
                 residual: bool = True) -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f"QuadraticLayer: embedding_dim {embedding_dim} is not divisible by num_heads "
                             f"{num_heads}")
        self.num_fields, self.embedding_dim, self.num_row, self.num_heads = num_fields, embedding_dim, num_row, num_heads
        self.input_dim = num_fields * embedding_dim
        self.head_dim = self.input_dim // num_heads
        self.linear = nn.Linear(self.input_dim, self.input_dim * num_row)
        self.bn = nn.BatchNorm1d(self.input_dim * num_row) if batch_norm else None
        # ReLU then dropout: one module, one pass each way (bars.models.layers.core.ReLUDropout, the same values)
        self.dropout = (ReLUDropout if relu else Dropout)(dropout) if dropout > 0 else None
        self.relu, self.residual = relu, residual

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        e = self.embedding_dim
        h = self.num_heads
        heads = x.reshape(b, self.num_fields, h, e // h).transpose(1, 2).reshape(b, h, self.head_dim)
        p = self.linear(x)
        if self.bn is not None:
            p = self.bn(p)
        if self.relu and self.dropout is None:
            p = torch.relu(p)
        p = p.view(b, h, self.num_row, self.head_dim)
        if self.dropout is not None:
            p = self.dropout(p)
        y = (heads * p.sum(dim=2)).reshape(b, self.input_dim)
        return y + x if self.residual else y
