"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020): stacked Customized Gate Control layers (shared
and task-specific experts, a softmax gate per task and one for the shared path), then one tower per task. FuxiCTR
2.3.10 model_zoo/multitask/PLE/src/PLE.py (:class:`~bars.models.layers.CustomizedGateControl` is its
``CGC_Layer``; every path of the first layer reads the flat field embeddings).

Multi-task (:mod:`bars.objective`): ``tasks`` are the spec's label columns, ``forward`` returns the logits
[B, T] and the trainer's loss is the sum over tasks (FuxiCTR's ``loss_weight='EQ'``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim
from bars.models._multitask import check_multitask, spec_tasks, tower_logits, towers
from bars.models.layers import CustomizedGateControl, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class PLEConfig:
    """FuxiCTR's constructor defaults: 1 CGC layer, 1 shared and 1 specific expert per task, experts
    [512, 256, 128], gates [128, 64], towers [128, 64], ReLU, no dropout, no batch norm."""

    embedding_dim: int
    num_layers: int = 1
    num_shared_experts: int = 1
    num_specific_experts: int = 1
    expert_hidden_units: tuple[int, ...] = (512, 256, 128)
    gate_hidden_units: tuple[int, ...] = (128, 64)
    tower_hidden_units: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_dim("num_layers", self.num_layers)
        check_dim("num_shared_experts", self.num_shared_experts)
        check_dim("num_specific_experts", self.num_specific_experts)
        check_multitask(self, "expert_hidden_units", optional_units=("gate_hidden_units", "tower_hidden_units"))


@register("ple", PLEConfig)
class PLE(nn.Module):
    multi_task = True  # logits [B, T], one column per label of the spec (tests and export read this)

    def __init__(self, spec: FeatureSpec, cfg: PLEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tasks = spec_tasks(spec)
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        dims = [self.embedding.output_dim] + [cfg.expert_hidden_units[-1]] * (cfg.num_layers - 1)
        self.cgc = nn.ModuleList(
            CustomizedGateControl(d, cfg.num_shared_experts, cfg.num_specific_experts, len(self.tasks),
                                  cfg.expert_hidden_units, cfg.gate_hidden_units, cfg.activation, cfg.batch_norm,
                                  cfg.dropout)
            for d in dims)
        self.towers = towers(len(self.tasks), cfg.expert_hidden_units[-1], cfg)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        xs = [self.embedding.flat(batch)] * (len(self.tasks) + 1)
        for layer in self.cgc:
            xs = layer(xs)
        return tower_logits(self.towers, xs[:-1])
