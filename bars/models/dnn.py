"""DNN: an MLP over the concatenated field embeddings."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class DNNConfig:
    embedding_dim: int
    hidden_units: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    batch_norm: bool = True
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("hidden_units", self.hidden_units)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)


@register("dnn", DNNConfig)
class DNN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.mlp = MLP(
            self.embedding.output_dim,
            cfg.hidden_units,
            cfg.activation,
            cfg.batch_norm,
            cfg.dropout,
            output_dim=1,
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.mlp(self.embedding.flat(batch)))
