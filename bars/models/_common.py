"""Validation helpers shared by the model config dataclasses (private: not a model module)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def check_deep(cfg, units_field: str) -> None:
    """The fields most models share: ``embedding_dim``, the MLP widths (``units_field``), activation, dropout."""
    check_dim("embedding_dim", cfg.embedding_dim)
    check_units(units_field, getattr(cfg, units_field))
    check_activation("activation", cfg.activation)
    check_dropout("dropout", cfg.dropout)


@dataclass(frozen=True)
class DeepConfig:
    """Field embeddings + one MLP: the whole config of DNN, Wide&Deep and DeepFM (each subclasses it)."""

    embedding_dim: int
    hidden_units: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    batch_norm: bool = True
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_deep(self, "hidden_units")


def logits(x: Tensor) -> Tensor:
    """``[B, 1] -> [B]``."""
    return x.squeeze(-1)
