"""DNN: an MLP over the concatenated field embeddings."""

from __future__ import annotations

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import DeepConfig, logits
from bars.models.layers import MLP, FeatureEmbedding
from bars.models.registry import register


class DNNConfig(DeepConfig):
    """embedding_dim, hidden_units, activation, batch_norm, dropout (see DeepConfig)."""


@register("dnn", DNNConfig)
class DNN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.mlp = MLP(self.embedding.output_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.mlp(self.embedding.flat(batch)))
