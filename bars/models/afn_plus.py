"""AFN+ (Cheng, Shen, Huang, AAAI 2020): AFN ensembled with a DNN, FuxiCTR's ``AFN`` with ``ensemble_dnn=True``.

    logit = fc([MLP_afn(flatten(LogNet(E1))), MLP_dnn(flatten(E2))])      fc: Linear(2, 1)

E1 and E2 are two separate embedding tables of the same fields (both under the embedding regularizer);
``batch_norm`` applies to both MLPs, as FuxiCTR's single ``batch_norm`` flag. Equations, parameter names and
their FuxiCTR counterparts: bars/models/afn.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from bars.models._common import check_activation, check_dropout, check_units
from bars.models.afn import AFNConfig, AFNEnsemble
from bars.models.registry import register


@dataclass(frozen=True)
class AFNPlusConfig(AFNConfig):
    dnn_hidden_units: tuple[int, ...] = (400, 400, 400)
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_activation("dnn_activation", self.dnn_activation)
        check_dropout("dnn_dropout", self.dnn_dropout)


@register("afn_plus", AFNPlusConfig)
class AFNPlus(AFNEnsemble):
    pass
