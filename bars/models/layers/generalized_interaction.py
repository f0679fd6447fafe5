"""AOANet's generalized interaction network."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GeneralizedInteraction(nn.Module):
    """One generalized interaction layer (Lang et al., AOANet, KDD 2021): from the field embeddings
    ``B_0 [B, F, D]`` and the previous layer's subspaces ``B_i [B, S_in, D]`` to ``S_out`` subspaces
    ``[B, S_out, D]``::

        B_{i+1}[o] = ( W_o ⊙ sum_{s, f} alpha[(s, f), o] * B_0[f] B_i[s]^T ) h_o

    (an outer product ``D x D`` per (subspace, field) pair, mixed by ``alpha``, gated element-wise by ``W_o``,
    projected by ``h_o``). Computed without the ``[B, S_in*F, D, D]`` outer products: ``out[b, o, i] =
    sum_s (sum_f alpha[s, f, o] B_0[b, f, i]) * (sum_j W[o, i, j] h[o, j] B_i[b, s, j])``.

    Parameters and their FuxiCTR initialisation (its names and shapes): ``W [S_out, D, D]`` identity per
    subspace, ``alpha [S_in * F, S_out]`` ones (row ``s * F + f``), ``h [S_out, D, 1]`` ones."""

    def __init__(self, input_subspaces: int, output_subspaces: int, num_fields: int, embedding_dim: int) -> None:
        super().__init__()
        self.input_subspaces = input_subspaces
        self.num_fields = num_fields
        self.W = nn.Parameter(torch.empty(output_subspaces, embedding_dim, embedding_dim))
        self.alpha = nn.Parameter(torch.empty(input_subspaces * num_fields, output_subspaces))
        self.h = nn.Parameter(torch.empty(output_subspaces, embedding_dim, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.W.copy_(torch.eye(self.W.shape[1]).expand_as(self.W))
            self.alpha.fill_(1.0)
            self.h.fill_(1.0)

    def forward(self, b0: Tensor, bi: Tensor) -> Tensor:
        alpha = self.alpha.view(self.input_subspaces, self.num_fields, -1)  # [S_in, F, S_out]
        left = torch.einsum("sfo,bfi->bsoi", alpha, b0)  # [B, S_in, S_out, D]
        right = torch.einsum("oij,bsj->bsoi", self.W * self.h.transpose(1, 2), bi)  # [B, S_in, S_out, D]
        return (left * right).sum(dim=1)


class GeneralizedInteractionNet(nn.Module):
    """``num_layers`` generalized interactions: ``B_1 = GI(B_0, B_0)`` (``S_in = F``), then
    ``B_{i+1} = GI(B_0, B_i)`` (``S_in = num_subspaces``); returns ``B_L [B, num_subspaces, D]``."""

    def __init__(self, num_layers: int, num_subspaces: int, num_fields: int, embedding_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GeneralizedInteraction(num_fields if i == 0 else num_subspaces, num_subspaces, num_fields, embedding_dim)
            for i in range(num_layers)
        )

    def forward(self, b0: Tensor) -> Tensor:
        bi = b0
        for layer in self.layers:
            bi = layer(b0, bi)
        return bi
