"""AOANet (Lang et al., "Architecture and Operation Adaptive Network for Online Recommendations", KDD 2021):
an MLP and a generalized interaction network over the same field embeddings.

    B_0 = E [B, F, D];  B_{l+1}[o] = (W_o ⊙ sum_{s,f} alpha[(s,f), o] B_0[f] B_l[s]^T) h_o   (l = 0..L-1)
    logit = fc([MLP(flat E), flat(B_L)])

(:class:`bars.models.layers.GeneralizedInteractionNet`; ``num_subspaces`` output subspaces per layer).

Config -> FuxiCTR ``AOANet`` (model_zoo/AOANet/src/AOANet.py; BARS ran v1.2.1, the same computation):
dnn_hidden_units (non-empty: ``fc`` reads its last width), ``activation`` = dnn_hidden_activations,
num_interaction_layers, num_subspaces, ``dropout`` = net_dropout, batch_norm (both the MLP's). Parameters:
``embedding.weight`` = embedding_layer, ``dnn.net`` = dnn.mlp, ``gin.layers[l].W/alpha/h`` = gin.layers[l].*
(W identity, alpha and h ones at start, as FuxiCTR), ``fc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_deep, check_dim, logits
from bars.models.layers import MLP, FeatureEmbedding, GeneralizedInteractionNet
from bars.models.registry import register


@dataclass(frozen=True)
class AOANetConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (64, 64, 64)
    activation: str = "relu"
    num_interaction_layers: int = 3
    num_subspaces: int = 4
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_deep(self, "dnn_hidden_units")
        if not self.dnn_hidden_units:
            raise ValueError("dnn_hidden_units must not be empty (AOANet's output layer reads the MLP's last width)")
        check_dim("num_interaction_layers", self.num_interaction_layers)
        check_dim("num_subspaces", self.num_subspaces)


@register("aoanet", AOANetConfig)
class AOANet(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: AOANetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.dnn = MLP(self.embedding.output_dim, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout)
        self.gin = GeneralizedInteractionNet(cfg.num_interaction_layers, cfg.num_subspaces, self.embedding.num_fields,
                                             cfg.embedding_dim)
        self.fc = nn.Linear(self.dnn.output_dim + cfg.num_subspaces * cfg.embedding_dim, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        out = torch.cat([self.dnn(emb.flatten(start_dim=1)), self.gin(emb).flatten(start_dim=1)], dim=-1)
        return logits(self.fc(out))
