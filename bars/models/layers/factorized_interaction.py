"""FinalNet's blocks (Zhu et al., "FINAL: Factorized Interaction Layer for CTR Prediction", SIGIR 2023): the field
gate, the factorized interaction layer (a Linear whose two halves multiply) and the FINAL block stacking them.

Written from FuxiCTR's model_zoo/FinalNet/src/FinalNet.py (2.3.10; BARS's x1 runs used the same computation under
the name FINAL, FuxiCTR 2.0.2): the same parameters in the same layout, so weights transplant one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from bars.models.layers.core import Dropout, ReLUDropout, activation

ResidualType = Literal["concat", "sum"]


class FeatureGating(nn.Module):
    """Field gates mixed across fields: ``g[b, f, :] = sum_j W[f, j] e[b, j, :] + bias[f]`` (FuxiCTR: a
    ``Linear(F, F)`` over the field axis), then ``[e; e * g]`` stacked on the field axis (``residual="concat"``:
    ``[B, 2F, D]``) or ``e + e * g`` (``"sum"``: ``[B, F, D]``). ``W`` starts at zeros and ``bias`` at ones (every
    gate 1 at the start, as FuxiCTR's ``init_weights``); they are plain parameters, not an ``nn.Linear``, so the
    BARS initialisation (xavier for every Linear) leaves them as FuxiCTR sets them."""

    def __init__(self, num_fields: int, residual: ResidualType = "concat") -> None:
        super().__init__()
        if residual not in ("concat", "sum"):
            raise ValueError(f"FeatureGating: residual must be 'concat' or 'sum', got {residual!r}")
        self.residual = residual
        self.weight = nn.Parameter(torch.zeros(num_fields, num_fields))
        self.bias = nn.Parameter(torch.ones(num_fields))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.bias.fill_(1.0)

    @property
    def output_fields(self) -> int:
        return self.weight.shape[0] * (2 if self.residual == "concat" else 1)

    def forward(self, e: Tensor) -> Tensor:
        gates = torch.matmul(self.weight, e) + self.bias.unsqueeze(-1)  # [F, F] @ [B, F, D] -> [B, F, D]
        if self.residual == "concat":
            return torch.cat([e, e * gates], dim=1)
        return e + e * gates


class FactorizedInteraction(nn.Module):
    """``h = Linear(x)`` split in halves ``(h2, h1)`` (first half, second half), output ``[h2; h1 * h2]``
    (``residual="concat"``: a Linear to ``output_dim``, which must be even) or ``h2 + h1 * h2`` (``"sum"``: a
    Linear to ``2 * output_dim``)."""

    def __init__(self, input_dim: int, output_dim: int, residual: ResidualType = "concat", bias: bool = True) -> None:
        super().__init__()
        if residual not in ("concat", "sum"):
            raise ValueError(f"FactorizedInteraction: residual must be 'concat' or 'sum', got {residual!r}")
        if residual == "concat" and output_dim % 2:
            raise ValueError(f"FactorizedInteraction: with residual 'concat' the output width must be even, "
                             f"got {output_dim}")
        self.residual = residual
        self.linear = nn.Linear(input_dim, output_dim * (2 if residual == "sum" else 1), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h2, h1 = torch.chunk(self.linear(x), 2, dim=-1)
        if self.residual == "concat":
            return torch.cat([h2, h1 * h2], dim=-1)
        return h2 + h1 * h2


class FinalBlock(nn.Module):
    """The FINAL block: per hidden width, :class:`FactorizedInteraction` -> BatchNorm (optional) -> activation
    (``None``: none, FuxiCTR's default) -> :class:`Dropout` (when > 0; after ReLU the one module
    :class:`ReLUDropout`, as the MLP); an MLP whose Linears are factorized
    interaction layers. Input ``[B, input_dim]``, output ``[B, hidden_units[-1]]``."""

    def __init__(self, input_dim: int, hidden_units: Sequence[int], activation_name: str | None = None,
                 dropout: float = 0.0, batch_norm: bool = True, residual: ResidualType = "concat") -> None:
        super().__init__()
        if not hidden_units:
            raise ValueError("FinalBlock: hidden_units must not be empty")
        layers: list[nn.Module] = []
        d = input_dim
        for h in hidden_units:
            layers.append(FactorizedInteraction(d, h, residual))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            if activation_name is not None and activation_name.lower() == "relu" and dropout > 0:
                layers.append(ReLUDropout(dropout))  # ReLU then dropout in one mask (the same values)
            else:
                if activation_name is not None:
                    # PReLU as the project's MLP (one slope per unit, 0.1); FuxiCTR's FinalBlock cannot build PReLU
                    act = nn.PReLU(h, init=0.1) if activation_name.lower() == "prelu" else None
                    layers.append(act or activation(activation_name, inplace=True))
                if dropout > 0:
                    layers.append(Dropout(dropout))
            d = h
        self.net = nn.Sequential(*layers)
        self.output_dim = d

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
