"""AFN: Adaptive Factorization Network (Cheng, Shen, Huang, "Adaptive Factorization Network: Learning
Adaptive-Order Feature Interactions", AAAI 2020). AFN+ (``afn_plus``, bars/models/afn_plus.py) ensembles it with
a DNN over a second embedding table.

Equations (as FuxiCTR 2.3.10 ``model_zoo/AFN/src/AFN.py`` computes them), field embeddings ``e_f`` [B, F, D]:

    y_j = BN_L(exp(sum_f w_jf * BN_F(ln max(|e_f|, 1e-5))))      j = 1..L logarithmic neurons, element-wise in D
    logit = MLP_afn(flatten(y))                                    (hidden layers, then a Linear to 1)

``batch_norm`` switches BatchNorm in the MLP(s) only; the two BatchNorms of the logarithmic layer are always on.

Parameter names (ours -> FuxiCTR AFN):
    embedding                     -> embedding_layer (FeatureEmbedding; embedding regularizer)
    log_net.log_batch_norm        -> log_batch_norm          BatchNorm1d(F)
    log_net.coefficient_W         -> coefficient_W           Linear(F, L, bias=False)
    log_net.exp_batch_norm        -> exp_batch_norm          BatchNorm1d(L)
    dense_layer.net.*             -> dense_layer.mlp.*       MLP(D * L -> afn_hidden_units -> 1)
AFN+ adds: embedding2 -> embedding_layer2, dnn.net.* -> dnn.mlp.* (MLP(F * D -> dnn_hidden_units -> 1)), fc -> fc
(Linear(2, 1) over [afn_out, dnn_out]).
Initialisation: the project default (Linear xavier-normal, bias 0, embeddings N(0, 1e-4)), which is FuxiCTR's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding, LogarithmicTransformation
from bars.models.registry import register


@dataclass(frozen=True)
class AFNConfig:
    embedding_dim: int
    logarithmic_neurons: int = 1000
    afn_hidden_units: tuple[int, ...] = (400,)
    afn_activation: str = "relu"
    afn_dropout: float = 0.4
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("logarithmic_neurons", self.logarithmic_neurons)
        check_units("afn_hidden_units", self.afn_hidden_units)
        check_activation("afn_activation", self.afn_activation)
        check_dropout("afn_dropout", self.afn_dropout)


@register("afn", AFNConfig)
class AFN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: AFNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.log_net = LogarithmicTransformation(self.embedding.num_fields, cfg.logarithmic_neurons)
        self.dense_layer = MLP(
            cfg.embedding_dim * cfg.logarithmic_neurons,
            cfg.afn_hidden_units,
            cfg.afn_activation,
            cfg.batch_norm,
            cfg.afn_dropout,
            output_dim=1,
        )

    def afn_logit(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, 1]``: the AFN tower."""
        return self.dense_layer(self.log_net(self.embedding(batch)).flatten(start_dim=1))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.afn_logit(batch))


class AFNEnsemble(AFN):
    """AFN+: ``logit = fc([AFN(x), DNN(x)])`` with the DNN over its own embedding table (FuxiCTR's
    ``ensemble_dnn=True``). Registered as ``afn_plus`` in bars/models/afn_plus.py."""

    def __init__(self, spec: FeatureSpec, cfg) -> None:
        super().__init__(spec, cfg)
        self.embedding2 = FeatureEmbedding(spec, cfg.embedding_dim)
        self.dnn = MLP(
            self.embedding2.output_dim,
            cfg.dnn_hidden_units,
            cfg.dnn_activation,
            cfg.batch_norm,
            cfg.dnn_dropout,
            output_dim=1,
        )
        self.fc = nn.Linear(2, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        dnn_out = self.dnn(self.embedding2(batch).flatten(start_dim=1))
        return logits(self.fc(torch.cat([self.afn_logit(batch), dnn_out], dim=-1)))
