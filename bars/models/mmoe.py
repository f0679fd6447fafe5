"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): expert MLPs shared by every task over the field
embeddings, one softmax gate per task mixing them, then one tower per task. FuxiCTR 2.3.10
model_zoo/multitask/MMoE/src/MMoE.py (:class:`~bars.models.layers.MixtureOfExperts` is its ``MMoE_Layer``).

Multi-task (:mod:`bars.objective`): ``tasks`` are the spec's label columns, ``forward`` returns the logits
[B, T] and the trainer's loss is the sum over tasks (FuxiCTR's ``loss_weight='EQ'``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim
from bars.models._multitask import check_multitask, spec_tasks, tower_logits, towers
from bars.models.layers import FeatureEmbedding, MixtureOfExperts
from bars.models.registry import register


@dataclass(frozen=True)
class MMoEConfig:
    """FuxiCTR's constructor defaults: 4 experts [512, 256, 128], gates [128, 64], towers [128, 64], ReLU, no
    dropout, no batch norm."""

    embedding_dim: int
    num_experts: int = 4
    expert_hidden_units: tuple[int, ...] = (512, 256, 128)
    gate_hidden_units: tuple[int, ...] = (128, 64)
    tower_hidden_units: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_dim("num_experts", self.num_experts)
        check_multitask(self, "expert_hidden_units", optional_units=("gate_hidden_units", "tower_hidden_units"))


@register("mmoe", MMoEConfig)
class MMoE(nn.Module):
    multi_task = True  # logits [B, T], one column per label of the spec (tests and export read this)

    def __init__(self, spec: FeatureSpec, cfg: MMoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tasks = spec_tasks(spec)
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.moe = MixtureOfExperts(self.embedding.output_dim, cfg.num_experts, len(self.tasks),
                                    cfg.expert_hidden_units, cfg.gate_hidden_units, cfg.activation, cfg.batch_norm,
                                    cfg.dropout)
        self.towers = towers(len(self.tasks), self.moe.output_dim, cfg)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return tower_logits(self.towers, self.moe(self.embedding.flat(batch)))
