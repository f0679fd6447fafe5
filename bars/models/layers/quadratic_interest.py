"""QIN's blocks (Li et al., "Quadratic Interest Network for Multimodal Click-Through Rate Prediction", arXiv
2504.17699, 2025): adaptive sparse target attention (ReLU instead of softmax) and the residual quadratic network.

Written from the authors' salmon1802/QIN ``src/QIN_variety_v9.py`` (``MultiHeadTargetAttention`` with its
``ScaledDotProductAttention``, ``QuadraticNeuralNetworks``): the same parameters in the same layout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bars.models.layers.core import Dropout
from bars.models.layers.quadratic import QuadraticLayer


class SparseTargetAttention(nn.Module):
    """Adaptive sparse target attention (ASTA): target ``t`` [B, d], history ``h`` [B, L, d], mask ``m`` [B, L]
    (true = a behaviour) -> [B, d]. With ``H`` heads of width ``a / H`` (``a`` = ``attention_dim``):

        q = W_q t,  k_j = W_k h_j,  v_j = W_v h_j                         (no biases; W_q, W_k, W_v: [a, d])
        w_hj = ReLU(q_h . k_hj / sqrt(a / H)) * m_j                        (``use_scale=False``: no division)
        out = W_o [sum_j w_1j v_1j, ..., sum_j w_Hj v_Hj] + t              (W_o: [d, a], no bias)

    The weights are not normalised (ReLU instead of softmax: a behaviour unlike the target gets exactly 0). The
    authors' code has one head (``H = 1``, scale ``sqrt(a)``) and multiplies the scores by the mask before the ReLU
    (the same weights: ReLU(0) = 0). A history without behaviours gives ``t``.

    Computed without projecting every behaviour: ``q_h . W_k,h h_j = (W_k,h^T q_h) . h_j`` and
    ``sum_j w_hj W_v,h h_j = W_v,h (sum_j w_hj h_j)`` (the same function and parameters; float rounding differs,
    ~1e-7 relative in float32), so a step costs O(B L d H) for the history instead of O(B L d a)."""

    def __init__(self, dim: int, attention_dim: int, num_heads: int = 1, use_scale: bool = True) -> None:
        super().__init__()
        if dim < 1 or attention_dim < 1 or num_heads < 1:
            raise ValueError(f"SparseTargetAttention: dim {dim}, attention_dim {attention_dim} and num_heads "
                             f"{num_heads} must be >= 1")
        if attention_dim % num_heads:
            raise ValueError(f"SparseTargetAttention: attention_dim {attention_dim} is not divisible by num_heads "
                             f"{num_heads}")
        self.dim, self.attention_dim, self.num_heads = dim, attention_dim, num_heads
        self.head_dim = attention_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim) if use_scale else 1.0
        self.query = nn.Linear(dim, attention_dim, bias=False)
        self.key = nn.Linear(dim, attention_dim, bias=False)
        self.value = nn.Linear(dim, attention_dim, bias=False)
        self.output = nn.Linear(attention_dim, dim, bias=False)

    def weights(self, target: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        """The attention weights ``w`` [B, H, L] (0 on padding positions and on negative scores)."""
        b, h, e, d = target.shape[0], self.num_heads, self.head_dim, self.dim
        q = self.query(target).view(b, h, 1, e)
        qk = torch.matmul(q, self.key.weight.view(h, e, d)).view(b, h, d)  # W_k,h^T q_h
        scores = torch.bmm(qk, history.transpose(1, 2))  # [B, H, L]
        return torch.relu(scores * self.scale) * mask.to(scores.dtype).unsqueeze(1)

    def forward(self, target: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        b, h, e, d = target.shape[0], self.num_heads, self.head_dim, self.dim
        pooled = torch.bmm(self.weights(target, history, mask), history)  # [B, H, d]: sum_j w_hj h_j
        v = torch.matmul(pooled.view(b, h, 1, d), self.value.weight.view(h, e, d).transpose(1, 2))  # [B, H, 1, e]
        return self.output(v.reshape(b, self.attention_dim)) + target


class QuadraticInterestNetwork(nn.Module):
    """QIN's quadratic network over ``x_0`` [B, D] -> logit [B, 1]; ``num_layers`` residual blocks

        x_{l+1} = x_l + Dropout(PReLU(BN(x_l * sum_r Dropout(W_l x_l + b_l)_r)))      (W_l: [R*D, D])

    (:class:`~bars.models.layers.QuadraticLayer` with one head, no ReLU and no inner residual; BN over the D
    features when ``batch_norm``; one PReLU parameter per block, torch's 0.25 init; ``dropout`` both on the
    projection and after the activation, as the authors), then ``fc``: Linear(D, 1)."""

    def __init__(self, input_dim: int, num_layers: int = 3, num_row: int = 2, dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            QuadraticLayer(1, input_dim, num_row, 1, False, dropout, relu=False, residual=False)
            for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(input_dim) for _ in range(num_layers)) if batch_norm else None
        self.activations = nn.ModuleList(nn.PReLU() for _ in range(num_layers))
        self.dropouts = nn.ModuleList(Dropout(dropout) for _ in range(num_layers)) if dropout > 0 else None
        self.fc = nn.Linear(input_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        for i, (layer, act) in enumerate(zip(self.layers, self.activations, strict=True)):
            y = layer(x)
            if self.norms is not None:
                y = self.norms[i](y)
            y = act(y)
            if self.dropouts is not None:
                y = self.dropouts[i](y)
            x = x + y
        return self.fc(x)
