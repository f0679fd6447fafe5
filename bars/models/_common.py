"""Validation helpers shared by the model config dataclasses (private: not a model module)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


#: defaults of the MLP keys (``activation``, ``batch_norm``, ``dropout``) where the MLP exists
MLP_DEFAULTS: dict[str, Any] = {"activation": "relu", "batch_norm": True, "dropout": 0.2}


def part_keys(cfg, used: bool, defaults: Mapping[str, Any], why: str) -> None:
    """Keys that only a part of the model reads (e.g. the MLP's activation): ``None`` means "not set".

    When the part exists (``used``), each unset key takes its value from ``defaults``. When it does not, a key
    that is set would be silently ignored, so it is an error naming the keys (``why`` says why the part is
    off). An empty tuple counts as not set. Frozen dataclasses call this from ``__post_init__``."""
    if used:
        for k, v in defaults.items():
            if getattr(cfg, k) is None:
                object.__setattr__(cfg, k, v)
        return
    given = [k for k in defaults if getattr(cfg, k) not in (None, ())]
    if given:
        sets = " ".join(f"model.params.{k}=null" for k in given)
        raise ValueError(f"{why}, so {given} would be ignored: remove them or set them to null ({sets})")


def check_deep(cfg, units_field: str) -> None:
    """The fields most models share: ``embedding_dim``, the MLP widths (``units_field``), activation, dropout
    (the last two are checked only when set)."""
    check_dim("embedding_dim", cfg.embedding_dim)
    check_units(units_field, getattr(cfg, units_field) or ())
    if cfg.activation is not None:
        check_activation("activation", cfg.activation)
    if cfg.dropout is not None:
        check_dropout("dropout", cfg.dropout)


@dataclass(frozen=True)
class DeepConfig:
    """Field embeddings + one MLP: the whole config of DNN, Wide&Deep and DeepFM (each subclasses it).
    With ``hidden_units`` empty the MLP is its output Linear alone, so activation, batch_norm and dropout must
    be left unset (null); otherwise unset ones take :data:`MLP_DEFAULTS`."""

    embedding_dim: int
    hidden_units: tuple[int, ...] = (400, 400, 400)
    activation: str | None = None
    batch_norm: bool | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        part_keys(self, bool(self.hidden_units), MLP_DEFAULTS, "hidden_units is empty (no hidden layer)")
        check_deep(self, "hidden_units")


def logits(x: Tensor) -> Tensor:
    """``[B, 1] -> [B]``."""
    return x.squeeze(-1)
