"""A check shared by the models built on pairs of fields (private: not a model module)."""

from __future__ import annotations

from bars.models.layers import FeatureEmbedding
from bars.models.registry import ModelConfigError


def pairwise_fields(model: str, embedding: FeatureEmbedding) -> int:
    """The number of fields of ``embedding`` for a model built on field pairs; fewer than 2 is an error."""
    f = embedding.num_fields
    if f < 2:
        raise ModelConfigError(
            f"{model} models interactions between pairs of fields and needs at least 2 fields; the spec gives "
            f"{f}: {list(embedding.field_names)}"
        )
    return f
