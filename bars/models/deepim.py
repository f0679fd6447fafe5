"""DeepIM (Yu et al., "Deep Interaction Machine: A Simple but Effective Model for High-order Feature
Interactions", CIKM 2020).

    logit = IM(E) [+ MLP(flat E)]
    IM(E) = fc(BN?([e_1, ..., e_K])),  e_k = sum over all k-subsets of fields of the element-wise products

(``e_k`` from the power sums by Newton's identities: :class:`bars.models.layers.InteractionMachine`).

Config -> FuxiCTR ``DeepIM`` (model_zoo/DeepIM/src/DeepIM.py; BARS ran v1.1.0, the same computation):
``im_order`` = im_order, ``im_batch_norm`` = im_batch_norm, ``hidden_units`` = hidden_units (``null``: no MLP;
``[]``: the MLP is its output Linear alone, as FuxiCTR's ``[]``), ``activation`` = hidden_activations,
``batch_norm`` = net_batch_norm, ``dropout`` = net_dropout. Parameters: ``embedding.weight`` = embedding_layer,
``im.fc`` / ``im.bn`` = im_layer.fc / im_layer.bn, ``dnn.net`` = dnn.mlp (same order: Linear, BatchNorm,
activation, Dropout per layer, then the output Linear).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding, InteractionMachine
from bars.models.layers.interaction_machine import MAX_IM_ORDER
from bars.models.registry import register


@dataclass(frozen=True)
class DeepIMConfig:
    embedding_dim: int
    im_order: int = 2
    im_batch_norm: bool = False
    hidden_units: tuple[int, ...] | None = (64, 64, 64)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        if not 1 <= self.im_order <= MAX_IM_ORDER:
            raise ValueError(f"im_order must be in 1..{MAX_IM_ORDER} (FuxiCTR's interaction machine), "
                             f"got {self.im_order}")
        if self.hidden_units is not None:
            check_units("hidden_units", self.hidden_units)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)


@register("deepim", DeepIMConfig)
class DeepIM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DeepIMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.im = InteractionMachine(cfg.embedding_dim, cfg.im_order, cfg.im_batch_norm)
        self.dnn = (
            MLP(self.embedding.output_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
            if cfg.hidden_units is not None
            else None
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        out = self.im(emb)
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(start_dim=1))
        return logits(out)
