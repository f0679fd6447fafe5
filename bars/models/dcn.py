"""DCN (Wang et al. 2017): a cross network and an MLP side by side over x0 = flat embeddings;
logit = Linear(concat(cross(x0), mlp(x0)))."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import MLP_DEFAULTS, check_deep, logits, part_keys
from bars.models.layers import MLP, CrossNet, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class DCNConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (400, 400, 400)  # empty: cross network only
    activation: str | None = None  # MLP keys: None = MLP_DEFAULTS; must stay None without an MLP
    batch_norm: bool | None = None
    dropout: float | None = None
    num_cross_layers: int = 3

    def __post_init__(self) -> None:
        part_keys(self, bool(self.dnn_hidden_units), MLP_DEFAULTS, "dnn_hidden_units is empty (cross network only)")
        check_deep(self, "dnn_hidden_units")
        if self.num_cross_layers < 0:
            raise ValueError(f"num_cross_layers must be >= 0, got {self.num_cross_layers}")


@register("dcn", DCNConfig)
class DCN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DCNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        self.cross = CrossNet(d, cfg.num_cross_layers)
        self.dnn = (
            MLP(d, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout)
            if cfg.dnn_hidden_units
            else None
        )
        self.fc = nn.Linear(d + (self.dnn.output_dim if self.dnn is not None else 0), 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding.flat(batch)
        out = self.cross(x0)
        if self.dnn is not None:
            out = torch.cat([out, self.dnn(x0)], dim=1)
        return logits(self.fc(out))
