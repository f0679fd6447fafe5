"""PPNet's parameter personalisation: gate units that scale every hidden layer of an MLP per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.models.layers.core import MLP


class GateNU(nn.Module):
    """Gate neural unit (PEPNet/PPNet, Chang et al., KDD 2023): ``2 * sigmoid(W_2 ReLU(W_1 z + b_1) + b_2)``,
    ``[B, input_dim] -> [B, output_dim]`` in (0, 2). FuxiCTR ``GateNU.gate`` = Sequential(Linear, ReLU, Linear,
    Sigmoid) (indices 0 and 2 are the Linears)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim),
                                  nn.Sigmoid())

    def forward(self, z: Tensor) -> Tensor:
        return self.gate(z) * 2


class GatedMLP(nn.Module):
    """FuxiCTR's ``PPNet_MLP``: per hidden layer ``h = (Linear -> BatchNorm? -> activation -> Dropout?)(h) *
    GateNU_l(gate_input)``, then ``Linear(h, output_dim)``. ``mlp_layers[l]`` is one-layer :class:`MLP`
    (``mlp_layers[l].net`` = FuxiCTR ``mlp_layers[l]``), ``mlp_layers[-1]`` the output Linear, ``gate_layers[l]``
    the gates."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        gate_input_dim: int,
        gate_hidden_dim: int,
        activation_name: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        output_dim: int = 1,
    ) -> None:
        super().__init__()
        self.mlp_layers = nn.ModuleList()
        self.gate_layers = nn.ModuleList()
        d = input_dim
        for h in hidden_units:
            self.mlp_layers.append(MLP(d, [h], activation_name, batch_norm, dropout))
            self.gate_layers.append(GateNU(gate_input_dim, gate_hidden_dim, h))
            d = h
        self.mlp_layers.append(nn.Linear(d, output_dim))

    def forward(self, x: Tensor, gate_input: Tensor) -> Tensor:
        h = x
        for layer, gate in zip(self.mlp_layers[:-1], self.gate_layers, strict=True):
            h = layer(h) * gate(gate_input)
        return self.mlp_layers[-1](h)


def gate_input(feature_emb: Tensor, prior_emb: Tensor | None) -> Tensor:
    """PPNet's gate input: the flat feature embedding with its gradient stopped (``detach``: the gates do not
    train the shared embedding), then the prior fields' own embeddings (which the gates do train)."""
    x = feature_emb.detach()
    return x if prior_emb is None else torch.cat([x, prior_emb], dim=-1)
