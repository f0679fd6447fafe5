"""HFM+ (Tay et al., AAAI 2019): the holographic pair vectors of HFM fed, flattened, to an MLP, plus the
first-order term: ``logit = b + sum_f w_f + MLP(flatten([e_i (*) e_j]_{i<j}))``. FuxiCTR's ``HFM`` with
``use_dnn=True``; equations and parameter names: bars/models/hfm.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dropout, check_units, logits
from bars.models.hfm import HFMConfig, HolographicFM
from bars.models.layers import MLP
from bars.models.layers.holographic import HolographicType
from bars.models.registry import register


@dataclass(frozen=True)
class HFMPlusConfig(HFMConfig):
    interaction_type: HolographicType = "circular_correlation"
    hidden_units: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    batch_norm: bool = True
    dropout: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_units("hidden_units", self.hidden_units)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)


@register("hfm_plus", HFMPlusConfig)
class HFMPlus(HolographicFM):
    def __init__(self, spec: FeatureSpec, cfg: HFMPlusConfig) -> None:
        super().__init__(spec, cfg)
        self.dnn = MLP(
            self.hfm.num_pairs * cfg.embedding_dim,
            cfg.hidden_units,
            cfg.activation,
            cfg.batch_norm,
            cfg.dropout,
            output_dim=1,
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        pairs = self.hfm(self.embedding(batch))
        return logits(self.dnn(pairs.flatten(start_dim=1)) + self.lr(batch))
