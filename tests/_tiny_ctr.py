"""A tiny seeded CTR problem shared by the model tests that fit a few steps (FinalNet, QNN, FCN/ECN): two
categorical fields and one numeric, the label driven by both categoricals."""

from __future__ import annotations

import torch

from bars.data.loader import SplitTensors
from bars.data.spec import Feature, FeatureSpec

SPEC = FeatureSpec(dataset="tiny", label="click", features=(
    Feature("a", "categorical", vocab_size=20), Feature("price", "numeric"), Feature("b", "categorical", vocab_size=20)))


def tiny_data(n: int = 2000, seed: int = 0) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(1, 20, (n,), generator=g, dtype=torch.int32)
    b = torch.randint(1, 20, (n,), generator=g, dtype=torch.int32)
    price = torch.randn(n, generator=g) * 0.1
    y = (torch.rand(n, generator=g) < torch.where(a < 10, 0.8, 0.1) * torch.where(b < 6, 1.0, 0.7)).float()
    return SplitTensors({"a": a, "price": price, "b": b}, y)


def tiny_batch(n: int = 64):
    """(features, labels) of the first ``n`` rows of ``tiny_data(n)``."""
    return next(tiny_data(n).batches(n, shuffle=False))
