"""`bars bench fidelity` (docs/fidelity.md): every variant of every experiment builds from the shipped configs
and trains, on a small synthetic set with Frappe's field names (the real numbers need the Frappe CSV; this
keeps the experiment table runnable as configs change)."""

from __future__ import annotations

import math

import pytest
import torch

from bars.benchmarks import fidelity
from bars.data.loader import SplitTensors
from bars.data.spec import Feature, FeatureSpec

FIELDS = {"user": 50, "item": 80, "daytime": 9, "weekday": 9, "isweekend": 4, "homework": 5, "cost": 4,
          "weather": 11, "country": 20, "city": 30}


def _data(n_train: int = 600, n_valid: int = 300):
    g = torch.Generator().manual_seed(0)
    spec = FeatureSpec(dataset="frappe_like", label="label",
                       features=tuple(Feature(k, "categorical", vocab_size=v) for k, v in FIELDS.items()))

    def split(n: int) -> SplitTensors:
        x = {k: torch.randint(1, v, (n,), generator=g, dtype=torch.int32) for k, v in FIELDS.items()}
        y = ((x["user"] + x["item"]) % 3 == 0).float()
        return SplitTensors(x, y)

    return spec, split(n_train), split(n_valid)


VARIANTS = sorted({(exp, label) for exp, vs in fidelity.EXPERIMENTS.items() for label in vs})


@pytest.mark.parametrize(("exp", "label"), VARIANTS)
def test_every_variant_builds_and_trains(exp, label):
    (variant,) = fidelity.EXPERIMENTS[exp][label]
    out = fidelity.run(_data(), variant, seed=2021, max_epochs=1, threads=1)
    assert out["epochs"] == 1 and 0.0 <= out["auc"] <= 1.0 and math.isfinite(out["logloss"])


def test_variants_differ_from_their_fuxictr_default_in_one_thing():
    """Each experiment's first variant is the FuxiCTR default; the others change exactly what their label says:
    a train key, a model key, or a hook on the same config."""
    for exp, variants in fidelity.EXPERIMENTS.items():
        labels = list(variants)
        assert "(FuxiCTR)" in labels[0], exp
        cids = {variants[lb][0][0] for lb in labels}
        assert len(cids) <= 2, exp  # the loss experiment compares two models, each with both losses
