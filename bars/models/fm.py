"""FM (Rendle 2010): logit = b + sum_f w_f + sum_{i<j} <e_i, e_j>."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models.layers import FeatureEmbedding, FMInteraction, LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class FMConfig:
    embedding_dim: int

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)


@register("fm", FMConfig)
class FM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.lr = LogisticRegression(spec, use_bias=True)
        self.fm = FMInteraction()

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.lr(batch) + self.fm(self.embedding(batch)))
