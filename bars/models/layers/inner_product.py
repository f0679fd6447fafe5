"""Products of field-embedding pairs: the inner products of IPNN, FwFM, DLRM and LorentzFM, NFM's bi-interaction
pooling, AFM's element-wise products. Pairs are ``i < j`` in ``itertools.combinations`` order (row-major upper
triangle), as FuxiCTR's ``InnerProductInteraction`` orders them, so per-pair weights transplant one-to-one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

PAIRWISE_OUTPUTS = ("product_sum", "bi_interaction", "inner_product", "elementwise_product")


def field_pairs(num_fields: int) -> tuple[Tensor, Tensor]:
    """``(left, right)`` int64 field indices of the ``F(F-1)/2`` pairs ``i < j``, in combinations order."""
    if num_fields < 0:
        raise ValueError(f"num_fields must be >= 0, got {num_fields}")
    left, right = torch.triu_indices(num_fields, num_fields, offset=1)
    return left, right


def num_pairs(num_fields: int) -> int:
    return num_fields * (num_fields - 1) // 2


class InnerProductInteraction(nn.Module):
    """Pairwise products of field embeddings ``[B, F, D]`` (FuxiCTR ``InnerProductInteraction``, same outputs):

    - ``product_sum``: ``sum_{i<j} <e_i, e_j>`` -> ``[B, 1]`` (the FM term);
    - ``bi_interaction``: ``sum_{i<j} e_i * e_j`` -> ``[B, D]`` (NFM's bi-interaction pooling), computed as
      ``((sum e)^2 - sum e^2) / 2``;
    - ``inner_product``: ``<e_i, e_j>`` for every pair -> ``[B, F(F-1)/2]`` (IPNN, FwFM, DLRM, LorentzFM);
    - ``elementwise_product``: ``e_i * e_j`` for every pair -> ``[B, F(F-1)/2, D]`` (AFM).
    No parameters; ``num_fields`` fixes the pair indices (needed by the last two outputs)."""

    def __init__(self, num_fields: int, output: str = "product_sum") -> None:
        super().__init__()
        if output not in PAIRWISE_OUTPUTS:
            raise ValueError(f"InnerProductInteraction output {output!r} is not one of {PAIRWISE_OUTPUTS}")
        self.output = output
        self.num_fields = num_fields
        left, right = field_pairs(num_fields)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        self.register_buffer("flat_index", left * num_fields + right, persistent=False)

    @property
    def num_pairs(self) -> int:
        return num_pairs(self.num_fields)

    def extra_repr(self) -> str:
        return f"num_fields={self.num_fields}, output={self.output!r}"

    def forward(self, emb: Tensor) -> Tensor:
        if self.output in ("product_sum", "bi_interaction"):
            s = emb.sum(dim=1)
            bi = 0.5 * (s * s - (emb * emb).sum(dim=1))
            return bi if self.output == "bi_interaction" else bi.sum(dim=1, keepdim=True)
        if emb.shape[1] != self.num_fields:
            raise ValueError(f"InnerProductInteraction built for {self.num_fields} fields got {emb.shape[1]}")
        if self.output == "inner_product":
            gram = torch.bmm(emb, emb.transpose(1, 2))  # [B, F, F]
            return gram.flatten(start_dim=1).index_select(1, self.flat_index)
        return emb.index_select(1, self.left) * emb.index_select(1, self.right)
