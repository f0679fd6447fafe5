"""afn_plus: FuxiCTR 2.3.10 composition following model_zoo/AFN/src/AFN.py with ``ensemble_dnn=True`` (AFN+), and
the transplant of our weights into it (the composition and transplant are afn's: fuxictr_zoo/afn.py)."""

from __future__ import annotations

from fuxictr_reference import E, Reference

from fuxictr_zoo.afn import AFN, AFN_STEPS_REASON, transplant_afn

REFERENCE = Reference(AFN, transplant_afn, {
    "bn": {**E, "logarithmic_neurons": 20, "afn_hidden_units": (64, 64), "afn_activation": "relu",
           "afn_dropout": 0.0, "batch_norm": True, "dnn_hidden_units": (64, 64, 64), "dnn_activation": "relu",
           "dnn_dropout": 0.0},
    "plain": {**E, "logarithmic_neurons": 8, "afn_hidden_units": (32,), "afn_activation": "relu",
              "afn_dropout": 0.0, "batch_norm": False, "dnn_hidden_units": (32, 16), "dnn_activation": "tanh",
              "dnn_dropout": 0.0},
}, "model_zoo/AFN/src/AFN.py", steps=10, steps_reason=AFN_STEPS_REASON)
