"""Wide & Deep (Cheng et al. 2016): logit = wide (first-order LR) + deep (MLP over embeddings)."""

from __future__ import annotations

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import DeepConfig, logits
from bars.models.layers import MLP, FeatureEmbedding, LogisticRegression
from bars.models.registry import register


class WideDeepConfig(DeepConfig):
    """embedding_dim, hidden_units, activation, batch_norm, dropout (see DeepConfig)."""


@register("widedeep", WideDeepConfig)
class WideDeep(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: WideDeepConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wide = LogisticRegression(spec, use_bias=False)  # the deep part's output Linear carries the bias
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.deep = MLP(self.embedding.output_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.wide(batch) + self.deep(self.embedding.flat(batch)))
