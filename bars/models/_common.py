"""Validation helpers shared by the model config dataclasses (private: not a model module)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from bars.models.layers import ACTIVATIONS


def check_dim(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def check_units(name: str, units: Sequence[int]) -> None:
    bad = [u for u in units if u < 1]
    if bad:
        raise ValueError(f"{name} must be positive layer widths, got {tuple(units)}")


def check_dropout(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_activation(name: str, value: str) -> None:
    if value.lower() not in ACTIVATIONS:
        raise ValueError(f"{name} {value!r} is not one of {sorted(ACTIVATIONS)}")


def logits(x: Tensor) -> Tensor:
    """``[B, 1] -> [B]``."""
    return x.squeeze(-1)
