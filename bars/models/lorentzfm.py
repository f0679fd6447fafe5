"""LorentzFM: Lorentzian factorization machine (Xu and Wu, "Learning Feature Interactions with Lorentzian
Factorization Machine", AAAI 2020; FuxiCTR ``model_zoo/LorentzFM``).

Each embedding e_f in R^D is lifted onto the hyperboloid (beta = 1) with zeroth coordinate
``u0_f = sqrt(1 + ||e_f||^2)``; every field pair scores the triangle-inequality term

    T(u, v) = (1 - <u, v>_L - u0 - v0) / (u0 v0),   <u, v>_L = <u, v> - u0 v0   (so 1 + (1 - <u,v> - u0 - v0)/(u0 v0))
    logit = sum_{i<j} T(e_i, e_j)

No linear term and no bias, as FuxiCTR. Parameters <-> FuxiCTR 2.3.10 ``LorentzFM``: ``embedding`` =
``embedding_layer`` (the only parameters). FuxiCTR's ``embedding_dropout`` argument, accepted and unused there, does
not exist here; its single ``regularizer`` maps to ``train.embedding_regularizer`` (there are no net weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim
from bars.models._pairs import pairwise_fields
from bars.models.layers import FeatureEmbedding, InnerProductInteraction
from bars.models.registry import register


@dataclass(frozen=True)
class LorentzFMConfig:
    embedding_dim: int

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)


@register("lorentzfm", LorentzFMConfig)
class LorentzFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: LorentzFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.inner = InnerProductInteraction(pairwise_fields("lorentzfm", self.embedding), "inner_product")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        inner = self.inner(emb)  # [B, P]
        zeroth = torch.sqrt((emb * emb).sum(dim=-1) + 1.0)  # [B, F]
        u0 = zeroth.index_select(1, self.inner.left)
        v0 = zeroth.index_select(1, self.inner.right)
        score = 1.0 + (1.0 - inner - u0 - v0) / (u0 * v0)
        return score.sum(dim=1)
