"""NFM: neural factorization machine (He and Chua, "Neural Factorization Machines for Sparse Predictive
Analytics", SIGIR 2017; FuxiCTR ``model_zoo/NFM``).

    f_BI = sum_{i<j} e_i * e_j = ((sum_i e_i)^2 - sum_i e_i^2) / 2     (bi-interaction pooling, [D])
    logit = sum_f w_f[x_f] + MLP(f_BI)

As FuxiCTR (which produced the BARS numbers): no batch norm or dropout on the pooled vector itself (the paper
has both), no global bias apart from the MLP's output bias, and FuxiCTR's ``embedding_dropout`` argument, which
its NFM accepts and never uses, does not exist here.

Parameters <-> FuxiCTR 2.3.10 ``NFM``: ``embedding`` = ``embedding_layer``; ``lr.embedding`` =
``lr_layer.embedding_layer`` (dim-1 weights, no bias); ``mlp`` = ``dnn`` (``MLP_Block``: input D, hidden layers
Linear [+ BatchNorm] + activation [+ dropout], output Linear to 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import DeepConfig, logits
from bars.models.layers import MLP, FeatureEmbedding, InnerProductInteraction, LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class NFMConfig(DeepConfig):
    """embedding_dim, hidden_units, activation, batch_norm, dropout (see DeepConfig); defaults: BARS Frappe_x1."""

    batch_norm: bool = False
    dropout: float = 0.4


@register("nfm", NFMConfig)
class NFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: NFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.lr = LogisticRegression(spec, use_bias=False)  # the MLP's output Linear carries the bias
        self.bi_pooling = InnerProductInteraction(self.embedding.num_fields, "bi_interaction")
        self.mlp = MLP(cfg.embedding_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.lr(batch) + self.mlp(self.bi_pooling(self.embedding(batch))))
