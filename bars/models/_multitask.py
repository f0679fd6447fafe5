"""What the multi-task models share (private: not a model module): the tasks they predict (every label column of
the spec, in its ``labels`` order: the trainer's multi-task API, :mod:`bars.objective`), their config checks and
their per-task towers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units
from bars.models.layers import MLP


def spec_tasks(spec: FeatureSpec) -> tuple[str, ...]:
    """The tasks of a multi-task model on ``spec``: every label column (one on a single-label dataset)."""
    return tuple(spec.labels)


def check_multitask(cfg, *required_units: str, optional_units: Sequence[str] = ()) -> None:
    """``embedding_dim``, activation and dropout, and the layer widths: each of ``required_units`` must name at
    least one layer (FuxiCTR reads its last width), ``optional_units`` may be empty."""
    check_dim("embedding_dim", cfg.embedding_dim)
    for name in required_units:
        units = getattr(cfg, name)
        if not units:
            raise ValueError(f"{name} must name at least one layer (its last width feeds the towers)")
        check_units(name, units)
    for name in optional_units:
        check_units(name, getattr(cfg, name))
    check_activation("activation", cfg.activation)
    check_dropout("dropout", cfg.dropout)


def towers(n: int, input_dim: int, cfg) -> nn.ModuleList:
    """One tower per task: ``MLP(tower_hidden_units) -> Linear(1)`` (FuxiCTR ``MLP_Block(output_dim=1)``, with the
    model's activation, dropout and batch norm)."""
    return nn.ModuleList(MLP(input_dim, cfg.tower_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
                         for _ in range(n))


def tower_logits(tower_list: nn.ModuleList, inputs: Sequence[Tensor]) -> Tensor:
    """Tower ``t`` on input ``t``: the logits [B, T]."""
    return torch.cat([t(x) for t, x in zip(tower_list, inputs, strict=False)], dim=1)
