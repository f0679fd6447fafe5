"""FmFM: field-matrixed factorization machine (Sun et al., "FM^2: Field-matrixed Factorization Machines for
Recommender Systems", WWW 2021; FuxiCTR ``model_zoo/FmFM``).

    logit = b + sum_f w_f[x_f] + sum_{i<j} (e_i M_ij) . e_j
    matrixed:   M_ij a learned D x D matrix per field pair            (interaction_weight [P, D, D])
    vectorized: M_ij = diag(m_ij), a learned D-vector per field pair  (interaction_weight [P, D]; "FvFM")

Pairs ``i < j`` in combinations order. ``interaction_weight`` starts xavier-normal over the whole tensor, as
FuxiCTR (fans ``D`` and ``P`` for [P, D]; ``D*D`` and ``P*D`` for [P, D, D]).

Parameters <-> FuxiCTR 2.3.10 ``FmFM``: ``embedding`` = ``embedding_layer``; ``interaction_weight`` =
``interaction_weight`` (same shape and layout: ``e_i @ M``); ``lr`` = ``lr_layer`` (dim-1 weights + bias).
FuxiCTR's FmFM takes one ``regularizer`` for embeddings AND net weights (``interaction_weight`` is a net weight):
to reproduce a BARS FmFM run set ``train.embedding_regularizer`` and ``train.net_regularizer`` to that value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models._pairs import pairwise_fields
from bars.models.layers import FeatureEmbedding, LogisticRegression, field_pairs, num_pairs
from bars.models.registry import register


@dataclass(frozen=True)
class FmFMConfig:
    embedding_dim: int
    field_interaction_type: Literal["vectorized", "matrixed"] = "vectorized"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)


@register("fmfm", FmFMConfig)
class FmFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FmFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(spec, d)
        f = pairwise_fields("fmfm", self.embedding)
        shape = (num_pairs(f), d) if cfg.field_interaction_type == "vectorized" else (num_pairs(f), d, d)
        self.interaction_weight = nn.Parameter(torch.empty(shape))
        left, right = field_pairs(f)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        self.lr = LogisticRegression(spec, use_bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.interaction_weight)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        left = emb.index_select(1, self.left)  # [B, P, D]
        right = emb.index_select(1, self.right)
        if self.cfg.field_interaction_type == "vectorized":
            left = left * self.interaction_weight
        else:
            left = torch.einsum("bpd,pde->bpe", left, self.interaction_weight)
        return logits((left * right).sum(dim=(1, 2)).unsqueeze(1) + self.lr(batch))
