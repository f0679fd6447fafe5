"""LR: logistic regression, the first-order baseline. logit = b + sum_f w_f[x_f]."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import logits
from bars.models.layers import LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class LRConfig:
    """No fields: LR's weights are one scalar per feature value (dim-1 embeddings), so it has no
    ``embedding_dim`` (a key it would ignore is an error)."""


@register("lr", LRConfig)
class LR(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: LRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lr = LogisticRegression(spec, use_bias=True)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.lr(batch))
