"""IPNN: the inner-product neural network (Qu et al., "Product-based Neural Networks for User Response
Prediction", ICDM 2016; BARS name IPNN, FuxiCTR ``model_zoo/PNN``, ``product_type="inner"``).

    z = [e_1, ..., e_F]  (flat field embeddings, F*D)
    p = [<e_i, e_j>  for i < j]  (F(F-1)/2 inner products, combinations order)
    logit = MLP([z; p])

Parameters <-> FuxiCTR 2.3.10 ``PNN``: ``embedding`` = ``embedding_layer``; ``mlp`` = ``dnn`` (``MLP_Block``: per
hidden layer Linear, BatchNorm when ``batch_norm``, activation, dropout; output Linear to 1). The inner-product
layer has no parameters. Regularisers: ``embedding`` is the embedding regulariser's, ``mlp`` the net's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import DeepConfig, logits
from bars.models.layers import MLP, FeatureEmbedding, InnerProductInteraction
from bars.models.registry import register


@dataclass(frozen=True)
class IPNNConfig(DeepConfig):
    """embedding_dim, hidden_units, activation, batch_norm, dropout (see DeepConfig); defaults: BARS Frappe_x1."""

    batch_norm: bool = False
    dropout: float = 0.3


@register("ipnn", IPNNConfig)
class IPNN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: IPNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f = self.embedding.num_fields
        self.inner = InnerProductInteraction(f, "inner_product")
        self.mlp = MLP(
            self.embedding.output_dim + self.inner.num_pairs,
            cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, output_dim=1,
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        return logits(self.mlp(torch.cat([emb.flatten(start_dim=1), self.inner(emb)], dim=1)))
