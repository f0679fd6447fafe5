"""FiBiNET (Huang, Zhang and Zhang, "FiBiNET: Combining Feature Importance and Bilinear feature Interaction for
Click-Through Rate Prediction", RecSys 2019; FuxiCTR ``model_zoo/FiBiNET``).

    E = [e_1..e_F];  V = SENET(E)  (squeeze-excitation: v_f = a_f e_f)
    p_ij = (e_i W) * e_j,  q_ij = (v_i W') * v_j   for i < j  (bilinear interaction; W per bilinear_type)
    logit = sum_f w_f[x_f] + MLP([p; q])

``bilinear_layers`` (FuxiCTR changed this between versions, and it changes numbers):
- ``shared`` (default): ONE bilinear layer serves p and q (W' = W), each D x D matrix initialised xavier-normal on
  its own: FuxiCTR 1.0.2 / 1.1.0, the versions that produced every published BARS FiBiNET number.
- ``separate``: two layers (W and W' learned apart), each weight tensor xavier-normal as a whole: FuxiCTR 2.x
  (2.3.10) and the paper's Figure 1.

Parameters <-> FuxiCTR 2.3.10 ``FiBiNET``: ``embedding`` = ``embedding_layer``; ``senet.excitation`` =
``senet_layer.excitation``; ``bilinear`` / ``bilinear2`` = ``bilinear_interaction1`` / ``bilinear_interaction2``
(``weight`` = ``bilinear_W``; ``bilinear2`` exists with ``separate`` only); ``lr`` = ``lr_layer`` (no bias);
``mlp`` = ``dnn``. FuxiCTR 1.x: ``bilinear.weight[k]`` = ``bilinear_interaction.bilinear_layer[k].weight.T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import DeepConfig, logits
from bars.models._pairs import pairwise_fields
from bars.models.layers import (
    MLP,
    BilinearInteraction,
    FeatureEmbedding,
    LogisticRegression,
    SqueezeExcitation,
    bilinear_concat,
)
from bars.models.registry import register


@dataclass(frozen=True)
class FiBiNETConfig(DeepConfig):
    """embedding_dim, hidden_units, activation, batch_norm, dropout (see DeepConfig) and the interaction knobs;
    defaults: BARS Frappe_x1 best."""

    dropout: float = 0.3
    reduction_ratio: float = 2.0
    excitation_activation: Literal["relu", "sigmoid"] = "relu"
    bilinear_type: Literal["field_all", "field_each", "field_interaction"] = "field_all"
    bilinear_layers: Literal["shared", "separate"] = "shared"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reduction_ratio > 0:
            raise ValueError(f"reduction_ratio must be > 0, got {self.reduction_ratio}")


@register("fibinet", FiBiNETConfig)
class FiBiNET(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FiBiNETConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f = pairwise_fields("fibinet", self.embedding)
        self.senet = SqueezeExcitation(f, cfg.reduction_ratio, cfg.excitation_activation)
        init = "matrix" if cfg.bilinear_layers == "shared" else "tensor"
        self.bilinear = BilinearInteraction(f, cfg.embedding_dim, cfg.bilinear_type, init)
        self.bilinear2 = (
            BilinearInteraction(f, cfg.embedding_dim, cfg.bilinear_type, init)
            if cfg.bilinear_layers == "separate"
            else None
        )
        self.lr = LogisticRegression(spec, use_bias=False)  # the MLP's output Linear carries the bias
        self.mlp = MLP(
            f * (f - 1) * cfg.embedding_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        x = bilinear_concat([(self.bilinear, emb), (self.bilinear2 or self.bilinear, self.senet(emb))])
        return logits(self.lr(batch) + self.mlp(x))  # x: [p, q] flattened, p = bilinear(emb), q of the SENET's
