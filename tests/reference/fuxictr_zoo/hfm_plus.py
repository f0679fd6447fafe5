"""hfm_plus: FuxiCTR 2.3.10 composition following model_zoo/HFM/src/HFM.py with ``use_dnn=True`` (HFM+), and the
transplant of our weights into it (the composition and transplant are hfm's: fuxictr_zoo/hfm.py)."""

from __future__ import annotations

from fuxictr_reference import MLP, E, Reference

from fuxictr_zoo.hfm import HFM, transplant_hfm

REFERENCE = Reference(HFM, transplant_hfm, {
    "correlation-bn": {**E, "interaction_type": "circular_correlation", "hidden_units": (400, 400, 400), **MLP},
    "convolution-plain": {**E, "interaction_type": "circular_convolution", "hidden_units": (64, 64),
                          "activation": "relu", "batch_norm": False, "dropout": 0.0},
    "hadamard-tanh": {**E, "interaction_type": "hadamard_product", "hidden_units": (32,), "activation": "tanh",
                      "batch_norm": True, "dropout": 0.0},
}, "model_zoo/HFM/src/HFM.py")
