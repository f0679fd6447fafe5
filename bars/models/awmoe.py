"""AW-MoE: Attention Weighted Mixture of Experts with contrastive learning (Gong et al., JD.com, "Attention Weighted
Mixture of Experts with Contrastive Learning for Personalized Ranking in E-commerce", ICDE 2023, arXiv 2306.05011).
No public code and not in FuxiCTR; the paper's body could not be retrieved here, so this is built from its abstract
and every choice below is an assumption, listed in docs/fidelity.md ("AW-MoE") and tested against these equations
in tests/test_models_awmoe.py (and tests/reference/fuxictr_zoo/awmoe.py, ``PAPER_ONLY``).

The user's behaviour sequence feeds the experts and the gate. For each (target, history) pair
(bars.models._sequence, as DIN: ``target_fields`` / ``sequence_fields``, read from the spec when null):

    expert input  x = [e_1, ..., v_U(t), ..., e_F]       DIN's input: the history pooled by DIN's activation unit
    experts       s_k = MLP_k(x) -> Linear(1),  k = 1..K    (each expert a full tower to one logit)
    gate unit     u_j = GU(h_j)  [K]                     an MLP on each behaviour's embedding
    activation    a_j = softmax_j(AU(t, h_j))           DIN's activation unit, its own parameters (normalised over
                                                         the row's behaviours; ``gate_use_softmax: false``: DIN's
                                                         unnormalised a_j m_j)
    gate          g = softmax_k(sum_pairs sum_j a_j u_j)  the expert activation vector [K]
    logit         = sum_k g_k s_k

Training (:mod:`bars.objective`): with ``contrastive_weight > 0`` the training-mode forward also returns the gate
output ``g`` and ``g'``, the gate on a randomly masked history (each behaviour dropped with probability
``mask_rate``, drawn from torch's default generator: reproducible under the trainer's seed; never in eval, so
validation, test, predict and export see the plain model), and :meth:`AWMoE.training_loss` is

    train.loss(logit, y) + contrastive_weight * InfoNCE(g, g'; temperature)

(:func:`~bars.models.layers.gate_info_nce`: cosine similarity, the batch's other samples as negatives). The main
prediction always uses the full history. With one expert the gate is 1 and AW-MoE is DIN (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units
from bars.models._sequence import check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.din import check_din_activation
from bars.models.layers import (
    MLP,
    AttentionWeightedGate,
    DINAttention,
    FeatureEmbedding,
    gate_info_nce,
    random_keep,
)
from bars.models.registry import register


@dataclass(frozen=True)
class AWMoEConfig:
    embedding_dim: int
    num_experts: int = 4
    expert_hidden_units: tuple[int, ...] = (512, 128, 64)  # each expert: DIN's default MLP, then Linear(1)
    activation: str = "relu"  # experts and gate unit (relu, dice, ...)
    gate_hidden_units: tuple[int, ...] = (64,)  # the gate unit's hidden layers (then Linear(num_experts))
    attention_hidden_units: tuple[int, ...] = (64,)  # both activation units (experts' pooling, gate)
    attention_activation: str = "dice"
    attention_output_activation: str | None = None
    attention_dropout: float = 0.0
    dropout: float = 0.0
    batch_norm: bool = False  # experts only
    use_softmax: bool = False  # the experts' DIN pooling (DIN's din_use_softmax)
    gate_use_softmax: bool = True  # the gate's activation weights normalised over the row's behaviours
    mask_rate: float = 0.5  # probability of dropping each behaviour in the masked view (training only)
    temperature: float = 0.1  # InfoNCE temperature
    contrastive_weight: float = 0.1  # weight of the contrastive loss (0: plain AW-MoE, no masked view)
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_experts", self.num_experts)
        check_units("expert_hidden_units", self.expert_hidden_units)
        check_units("gate_hidden_units", self.gate_hidden_units)
        check_units("attention_hidden_units", self.attention_hidden_units)
        check_din_activation("activation", self.activation)
        check_din_activation("attention_activation", self.attention_activation)
        if self.attention_output_activation is not None:
            check_activation("attention_output_activation", self.attention_output_activation)
        check_dropout("attention_dropout", self.attention_dropout)
        check_dropout("dropout", self.dropout)
        if not 0.0 <= self.mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in [0, 1), got {self.mask_rate}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.contrastive_weight >= 0.0:
            raise ValueError(f"contrastive_weight must be >= 0, got {self.contrastive_weight}")
        check_pair_keys(self.target_fields, self.sequence_fields)


@register("awmoe", AWMoEConfig)
class AWMoE(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: AWMoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "awmoe")
        attended = [n for _, seqs in self.pairs for n in seqs]
        self.embedding = FeatureEmbedding(spec, d, unpooled=attended)
        self.attention = nn.ModuleList([  # the experts' input: DIN's pooled history
            DINAttention(d * len(targets), cfg.attention_hidden_units, cfg.attention_activation,
                         cfg.attention_output_activation, cfg.attention_dropout, cfg.use_softmax)
            for targets, _ in self.pairs
        ])
        self.gates = nn.ModuleList([
            AttentionWeightedGate(d * len(targets), cfg.num_experts, cfg.gate_hidden_units, cfg.activation,
                                  cfg.attention_hidden_units, cfg.attention_activation,
                                  cfg.attention_output_activation, cfg.dropout, cfg.attention_dropout,
                                  cfg.gate_use_softmax)
            for targets, _ in self.pairs
        ])
        order = list(self.embedding.field_names) + attended
        self.register_buffer("order", torch.tensor([order.index(n) for n in spec.names]), persistent=False)
        self.experts = nn.ModuleList(
            MLP(len(spec.names) * d, cfg.expert_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
            for _ in range(cfg.num_experts))

    def _views(self, batch: dict[str, Tensor], masked: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """(expert input [B, F * d], gate logits [B, K], masked-view gate logits [B, K] or None)."""
        pooled, z, z_masked = [], 0, 0
        for pair, att, gate in zip(self.pairs, self.attention, self.gates, strict=True):
            t, h = pair_embeddings(self.embedding, batch, pair)
            mask = batch[pair[1][0]] > 0
            v = att(t, h, mask)
            pooled.append(v.view(v.size(0), len(pair[1]), self.cfg.embedding_dim))
            scores, units = gate.per_behaviour(t, h)
            z = z + gate.combine(scores, units, mask)
            if masked:
                z_masked = z_masked + gate.combine(scores, units, random_keep(mask, self.cfg.mask_rate))
        x = torch.cat([self.embedding(batch), *pooled], dim=1).index_select(1, self.order).flatten(start_dim=1)
        return x, z, (z_masked if masked else None)

    def gate(self, batch: dict[str, Tensor]) -> Tensor:
        """The expert activation vector ``g`` [B, K] on the full history."""
        return torch.softmax(self._views(batch, False)[1], dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        contrast = self.training and self.cfg.contrastive_weight > 0
        x, z, z_masked = self._views(batch, contrast)
        experts = torch.cat([e(x) for e in self.experts], dim=1)  # [B, K]
        g = torch.softmax(z, dim=-1)
        logit = (g * experts).sum(dim=1)
        if contrast:
            return {"logit": logit, "gate": g, "gate_masked": torch.softmax(z_masked, dim=-1)}
        return logit

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``train.loss(logit, y) + contrastive_weight * InfoNCE(g, g')`` (module docstring); the plain loss for
        an output without the two gate views (eval mode, or ``contrastive_weight: 0``)."""
        if isinstance(outputs, Tensor):
            return loss_fn(outputs, labels)
        loss = loss_fn(outputs["logit"], labels)
        cl = gate_info_nce(outputs["gate"], outputs["gate_masked"], self.cfg.temperature)
        return loss + self.cfg.contrastive_weight * cl
