"""DCN-V2 (Wang et al. 2021), full-rank cross network with an MLP:
- stacked:       logit = Linear(mlp(cross(x0)))
- parallel:      logit = Linear(concat(cross(x0), mlp(x0)))
- crossnet_only: logit = Linear(cross(x0))"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import MLP_DEFAULTS, check_deep, logits, part_keys
from bars.models.layers import MLP, CrossNetV2, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class DCNv2Config:
    embedding_dim: int
    model_structure: Literal["stacked", "parallel", "crossnet_only"] = "parallel"
    # MLP keys: None = the defaults below (MLP_DEFAULTS); with crossnet_only they must stay None
    dnn_hidden_units: tuple[int, ...] | None = None
    activation: str | None = None
    batch_norm: bool | None = None
    dropout: float | None = None
    num_cross_layers: int = 3

    def __post_init__(self) -> None:
        part_keys(
            self,
            self.model_structure != "crossnet_only",
            {"dnn_hidden_units": (400, 400, 400), **MLP_DEFAULTS},
            "model_structure is 'crossnet_only' (no MLP)",
        )
        check_deep(self, "dnn_hidden_units")
        if self.num_cross_layers < 1:
            raise ValueError(f"num_cross_layers must be >= 1, got {self.num_cross_layers}")
        if self.model_structure != "crossnet_only" and not self.dnn_hidden_units:
            raise ValueError(f"model_structure {self.model_structure!r} needs dnn_hidden_units")


@register("dcnv2", DCNv2Config)
class DCNv2(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DCNv2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.structure = cfg.model_structure
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        self.cross = CrossNetV2(d, cfg.num_cross_layers)
        self.dnn = None
        final = d
        if self.structure != "crossnet_only":
            self.dnn = MLP(d, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout)
            final = self.dnn.output_dim + (d if self.structure == "parallel" else 0)
        self.fc = nn.Linear(final, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding.flat(batch)
        cross = self.cross(x0)
        if self.dnn is None:
            out = cross
        elif self.structure == "stacked":
            out = self.dnn(cross)
        else:
            out = torch.cat([cross, self.dnn(x0)], dim=1)
        return logits(self.fc(out))
