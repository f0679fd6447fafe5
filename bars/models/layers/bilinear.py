"""FiBiNET's bilinear interaction: one learned D x D matrix between the two embeddings of each field pair."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bars.models.layers.inner_product import field_pairs, num_pairs
from bars.models.layers.kernels import PairProducts, traced

BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")
BILINEAR_INITS = ("tensor", "matrix")


class BilinearInteraction(nn.Module):
    """``p_ij = (e_i W) * e_j`` for every field pair ``i < j``: ``[B, F, D] -> [B, F(F-1)/2, D]``.

    ``bilinear_type`` picks how many matrices there are (FuxiCTR's names): ``field_all`` one ``W`` shared by all
    pairs (``weight [D, D]``), ``field_each`` one per left field ``i`` (``weight [F, D, D]``), ``field_interaction``
    one per pair (``weight [F(F-1)/2, D, D]``, pairs in combinations order). ``weight`` is FuxiCTR 2.x's
    ``bilinear_W`` (``BilinearInteractionV2``) with the same layout (``e_i @ W``); FuxiCTR 1.x stored each matrix
    as an ``nn.Linear(D, D, bias=False)``, whose ``.weight`` is our matrix transposed.

    ``init``: ``tensor`` = xavier-normal over the whole weight tensor, as FuxiCTR 2.x (for a 3-d weight its fans
    are ``D*D`` and ``n*D``, a much smaller std than one D x D matrix's); ``matrix`` = every D x D matrix
    xavier-normal on its own (std ``sqrt(1/D)``), as FuxiCTR 1.x's Linear per matrix, which produced the BARS
    numbers. The two are identical for ``field_all``."""

    def __init__(self, num_fields: int, dim: int, bilinear_type: str = "field_interaction", init: str = "tensor"
                 ) -> None:
        super().__init__()
        if bilinear_type not in BILINEAR_TYPES:
            raise ValueError(f"bilinear_type {bilinear_type!r} is not one of {BILINEAR_TYPES}")
        if init not in BILINEAR_INITS:
            raise ValueError(f"bilinear init {init!r} is not one of {BILINEAR_INITS}")
        self.bilinear_type = bilinear_type
        self.init = init
        self.num_fields = num_fields
        shape = {
            "field_all": (dim, dim),
            "field_each": (num_fields, dim, dim),
            "field_interaction": (num_pairs(num_fields), dim, dim),
        }[bilinear_type]
        self.weight = nn.Parameter(torch.empty(shape))
        left, right = field_pairs(num_fields)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"bilinear_type={self.bilinear_type!r}, weight={tuple(self.weight.shape)}, init={self.init!r}"

    def reset_parameters(self) -> None:
        if self.init == "tensor" or self.weight.dim() == 2:
            nn.init.xavier_normal_(self.weight)
        else:
            d = self.weight.shape[-1]
            with torch.no_grad():
                self.weight.normal_(0.0, math.sqrt(2.0 / (d + d)))

    def hidden(self, emb: Tensor) -> Tensor:
        """``e_i W`` (``field_all``) or ``e_i W_i`` (``field_each``) per field, ``[B, F, D]``: the left factor of
        every pair whose left field is i."""
        if self.bilinear_type == "field_all":
            return emb @ self.weight
        if self.bilinear_type == "field_each":
            return torch.einsum("bfd,fde->bfe", emb, self.weight)
        raise ValueError("field_interaction has a matrix per pair, not per field")

    def forward(self, emb: Tensor) -> Tensor:
        right = emb.index_select(1, self.right)
        if self.bilinear_type == "field_interaction":
            left = torch.einsum("bpd,pde->bpe", emb.index_select(1, self.left), self.weight)
        else:
            left = self.hidden(emb).index_select(1, self.left)
        return left * right


def bilinear_concat(layers: list[tuple[BilinearInteraction, Tensor]]) -> Tensor:
    """``[B, n * P * D]``: ``cat([layer(emb) for layer, emb in layers], 1).flatten(1)``, FiBiNET's MLP input. With a
    matrix per field or one for all (not per pair), on CPU outside traced graphs, the products are written straight
    into it (:class:`bars.models.layers.kernels.PairProducts`: no ``[B, P, D]`` gathers, no concatenation, and a
    backward without ``index_add_`` along the pair axis); the same values bit for bit."""
    first, emb = layers[0]
    plain = (traced() or emb.device.type != "cpu"
             or any(layer.bilinear_type == "field_interaction" for layer, _ in layers)
             or any(not torch.equal(layer.left, first.left) for layer, _ in layers))
    if plain:
        return torch.cat([layer(e) for layer, e in layers], dim=1).flatten(start_dim=1)
    hes = [t for layer, e in layers for t in (layer.hidden(e), e)]
    return PairProducts.apply(first.left, first.right, *hes).flatten(start_dim=1)
