"""SAM (Cheng and Xue, "Looking at CTR Prediction Again: Is Attention All You Need?",
SIGIR 2021): self-attentive interaction blocks over the field embeddings E [B, F, D], then a Linear.

    S = E E^T                                      (dot products of all field pairs, [B, F, F])
    SAM2A:  O[i, j] = S[i, j] * W[i, j]            [B, F, F, D]   (W [F, F, D], ones at start)
    SAM2E:  O[i, j] = S[i, j] * (e_i ⊙ e_j)        [B, F, F, D]
    SAM3A:  E' = sum_j (E K(E)^T)[i, j] * W[i, j] [+ Q(E)]          [B, F, D]  (stacked L times)
    SAM3E:  E' = sum_j (E K(E)^T)[i, j] * (e_i ⊙ e_j) [+ Q(E)]      [B, F, D]  (stacked L times)
    each followed by dropout; aggregation: concat (flatten) | weighted_pooling (sum_i w_i E'_i, w ones at
    start) | mean_pooling | sum_pooling; logit = fc(aggregate).

Config -> FuxiCTR ``SAM`` (model_zoo/SAM/src/SAM.py; BARS ran v1.2.1, the same computation): interaction_type,
aggregation (SAM2A/SAM2E only with concat, as FuxiCTR), num_interaction_layers and use_residual (SAM3A/SAM3E
only; SAM2A/SAM2E are a single layer without residual), ``dropout`` = net_dropout. Parameters:
``embedding.weight`` = embedding_layer, ``layers[l].W/K/Q`` = block.layers[l].W/K/Q (K, Q: Linear without bias),
``pool_weight`` = block.weight, ``fc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout, logits
from bars.models.layers import Dropout, FeatureEmbedding
from bars.models.registry import register

InteractionType = Literal["SAM2A", "SAM2E", "SAM3A", "SAM3E"]
Aggregation = Literal["concat", "weighted_pooling", "mean_pooling", "sum_pooling"]


@dataclass(frozen=True)
class SAMConfig:
    embedding_dim: int
    interaction_type: InteractionType = "SAM2E"
    aggregation: Aggregation = "concat"
    num_interaction_layers: int = 3
    use_residual: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_interaction_layers", self.num_interaction_layers)
        check_dropout("dropout", self.dropout)
        if self.interaction_type in ("SAM2A", "SAM2E") and self.aggregation != "concat":
            raise ValueError(f"interaction_type {self.interaction_type} supports aggregation 'concat' only "
                             f"(its output is per field pair), got {self.aggregation!r}")


class SAMLayer(nn.Module):
    """One SAM interaction layer of type ``kind`` over ``[B, F, D]`` (see the module docstring)."""

    def __init__(self, kind: InteractionType, num_fields: int, dim: int, use_residual: bool, dropout: float) -> None:
        super().__init__()
        self.kind = kind
        self.W = nn.Parameter(torch.ones(num_fields, num_fields, dim)) if kind in ("SAM2A", "SAM3A") else None
        self.K = nn.Linear(dim, dim, bias=False) if kind in ("SAM3A", "SAM3E") else None
        self.Q = nn.Linear(dim, dim, bias=False) if kind in ("SAM3A", "SAM3E") and use_residual else None
        self.dropout = Dropout(dropout) if dropout > 0 else None

    def reset_parameters(self) -> None:
        if self.W is not None:
            nn.init.ones_(self.W)

    def forward(self, e: Tensor) -> Tensor:
        keys = self.K(e) if self.K is not None else e
        s = torch.bmm(e, keys.transpose(1, 2)).unsqueeze(-1)  # [B, F, F, 1]
        if self.kind in ("SAM2A", "SAM2E"):
            out = s * self.W if self.W is not None else s * (e.unsqueeze(2) * e.unsqueeze(1))
        elif self.W is not None:  # SAM3A: sum_j S[i, j] W[i, j], per field i one [B, F] x [F, D] product (not the
            # [B, F, F, D] products summed, FuxiCTR's form: 400 MB a layer at Criteo's 39 fields)
            out = torch.bmm(s.squeeze(-1).transpose(0, 1), self.W).transpose(0, 1)
        else:  # SAM3E: sum_j S[i, j] (e_i ⊙ e_j) = e_i ⊙ (S E)_i
            out = e * torch.bmm(s.squeeze(-1), e)
        if self.Q is not None:
            out = out + self.Q(e)
        if self.dropout is not None:
            out = self.dropout(out)
        return out


@register("sam", SAMConfig)
class SAM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: SAMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f, d = self.embedding.num_fields, cfg.embedding_dim
        pairwise = cfg.interaction_type in ("SAM2A", "SAM2E")
        n = 1 if pairwise else cfg.num_interaction_layers
        self.layers = nn.ModuleList(
            SAMLayer(cfg.interaction_type, f, d, cfg.use_residual and not pairwise, cfg.dropout) for _ in range(n)
        )
        self.pool_weight = nn.Parameter(torch.ones(f, 1)) if cfg.aggregation == "weighted_pooling" else None
        if cfg.aggregation == "concat":
            width = f * f * d if pairwise else f * d
        else:
            width = d
        self.fc = nn.Linear(width, 1)

    def reset_parameters(self) -> None:
        if self.pool_weight is not None:
            nn.init.ones_(self.pool_weight)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        e = self.embedding(batch)
        for layer in self.layers:
            e = layer(e)
        agg = self.cfg.aggregation
        if agg == "concat":
            out = e.flatten(start_dim=1)
        elif agg == "weighted_pooling":
            out = (e * self.pool_weight).sum(dim=1)
        elif agg == "mean_pooling":
            out = e.mean(dim=1)
        else:
            out = e.sum(dim=1)
        return logits(self.fc(out))
