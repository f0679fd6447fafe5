"""LR: logistic regression, the first-order baseline. logit = b + sum_f w_f[x_f]."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models.layers import LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class LRConfig:
    embedding_dim: int  # unused by LR (its weights are dim-1 embeddings); kept so every model shares the key

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)


@register("lr", LRConfig)
class LR(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: LRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lr = LogisticRegression(spec, use_bias=True)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.lr(batch))
