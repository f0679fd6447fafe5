"""Shared-Bottom (Caruana 1997; Ruder, arXiv 2017): one MLP shared by every task over the field embeddings, then
one tower per task. FuxiCTR 2.3.10 model_zoo/multitask/ShareBottom/src/ShareBottom.py.

Multi-task (:mod:`bars.objective`): ``tasks`` are the spec's label columns, ``forward`` returns the logits
[B, T] and the trainer's loss is the sum over tasks (FuxiCTR's ``loss_weight='EQ'``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._multitask import check_multitask, spec_tasks, tower_logits, towers
from bars.models.layers import MLP, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class ShareBottomConfig:
    """FuxiCTR's constructor defaults: bottom [64, 64, 64], towers [64], ReLU, no dropout, no batch norm."""

    embedding_dim: int
    bottom_hidden_units: tuple[int, ...] = (64, 64, 64)
    tower_hidden_units: tuple[int, ...] = (64,)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_multitask(self, "bottom_hidden_units", optional_units=("tower_hidden_units",))


@register("sharebottom", ShareBottomConfig)
class ShareBottom(nn.Module):
    multi_task = True  # logits [B, T], one column per label of the spec (tests and export read this)

    def __init__(self, spec: FeatureSpec, cfg: ShareBottomConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tasks = spec_tasks(spec)
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.bottom = MLP(self.embedding.output_dim, cfg.bottom_hidden_units, cfg.activation, cfg.batch_norm,
                          cfg.dropout)
        self.towers = towers(len(self.tasks), self.bottom.output_dim, cfg)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.bottom(self.embedding.flat(batch))
        return tower_logits(self.towers, [h] * len(self.tasks))
