"""FinalNet (Zhu et al., "FINAL: Factorized Interaction Layer for CTR Prediction", SIGIR 2023): MLPs whose Linears
are factorized interaction layers (:class:`bars.models.layers.FinalBlock`), one block or two.

    E = field embeddings [B, F, D]
    block 1:  y1 = fc1(FinalBlock_1(flat(G(E))))      G: feature gating [E; E * gates] (use_feature_gating) or E
    "1B":     logit = y1
    "2B":     y2 = fc2(FinalBlock_2(flat(E)));  logit = (y1 + y2) / 2

Training loss of "2B" (FuxiCTR's ``add_loss``, through :meth:`FinalNet.training_loss`): with ``p = sigmoid(logit)``,

    loss(logit, y) + loss(y1, sg(p)) + loss(y2, sg(p))      (sg: no gradient; ``loss`` = train.loss)

so each block is also distilled towards the ensemble's prediction. In training mode a "2B" model returns
``{"logit", "logit1", "logit2"}``; in eval mode (validation, test, predict, export) the logits ``[B]`` alone.

Config -> FuxiCTR ``FinalNet`` (model_zoo/FinalNet/src/FinalNet.py; BARS's x1 runs: ``FINAL`` of FuxiCTR 2.0.2,
where use_feature_gating was ``use_field_gate`` and batch norm ``norm_type: BN``, the same computation):
block_type, batch_norm (every block layer), use_feature_gating, block{1,2}_hidden_units,
``block{1,2}_activation`` = block{1,2}_hidden_activations (null: none, FuxiCTR's default), block{1,2}_dropout,
residual_type. A "1B" model has no second block: its block2_* keys must be null. Parameters:
``embedding.weight`` = embedding_layer, ``gating.weight/bias`` = feature_gating.linear (zeros / ones at start),
``block1.net`` = block1.layer/norm, ``fc1``, ``block2.net``, ``fc2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import FeatureEmbedding, FeatureGating, FinalBlock
from bars.models.registry import register


@dataclass(frozen=True)
class FinalNetConfig:
    embedding_dim: int
    block_type: Literal["1B", "2B"] = "2B"
    batch_norm: bool = True
    use_feature_gating: bool = True
    block1_hidden_units: tuple[int, ...] = (64, 64, 64)
    block1_activation: str | None = None
    block1_dropout: float = 0.0
    block2_hidden_units: tuple[int, ...] | None = (64, 64, 64)
    block2_activation: str | None = None
    block2_dropout: float | None = 0.0
    residual_type: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        blocks = (1, 2) if self.block_type == "2B" else (1,)
        if self.block_type == "1B":
            given = [k for k in ("block2_hidden_units", "block2_activation", "block2_dropout")
                     if getattr(self, k) not in (None, ())]
            if given:
                sets = " ".join(f"model.params.{k}=null" for k in given)
                raise ValueError(f"block_type is '1B' (no second block), so {given} would be ignored: remove them "
                                 f"or set them to null ({sets})")
        elif self.block2_dropout is None:
            object.__setattr__(self, "block2_dropout", 0.0)
        for i in blocks:
            units = getattr(self, f"block{i}_hidden_units") or ()
            if not units:
                raise ValueError(f"block{i}_hidden_units must not be empty (fc{i} reads the block's last width)")
            check_units(f"block{i}_hidden_units", units)
            if self.residual_type == "concat" and any(u % 2 for u in units):
                raise ValueError(f"block{i}_hidden_units {tuple(units)}: with residual_type 'concat' every width "
                                 f"must be even (a factorized layer splits its output in halves)")
            act = getattr(self, f"block{i}_activation")
            if act is not None:
                check_activation(f"block{i}_activation", act)
            check_dropout(f"block{i}_dropout", getattr(self, f"block{i}_dropout"))


@register("finalnet", FinalNetConfig)
class FinalNet(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FinalNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f, d = self.embedding.num_fields, cfg.embedding_dim
        self.gating = FeatureGating(f, "concat") if cfg.use_feature_gating else None
        width1 = (self.gating.output_fields if self.gating is not None else f) * d
        self.block1 = FinalBlock(width1, cfg.block1_hidden_units, cfg.block1_activation, cfg.block1_dropout,
                                 cfg.batch_norm, cfg.residual_type)
        self.fc1 = nn.Linear(self.block1.output_dim, 1)
        self.block2 = self.fc2 = None
        if cfg.block_type == "2B":
            assert cfg.block2_hidden_units is not None and cfg.block2_dropout is not None
            self.block2 = FinalBlock(f * d, cfg.block2_hidden_units, cfg.block2_activation, cfg.block2_dropout,
                                     cfg.batch_norm, cfg.residual_type)
            self.fc2 = nn.Linear(self.block2.output_dim, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        emb = self.embedding(batch)
        x1 = self.gating(emb) if self.gating is not None else emb
        y1 = logits(self.fc1(self.block1(x1.flatten(start_dim=1))))
        if self.block2 is None or self.fc2 is None:
            return y1
        y2 = logits(self.fc2(self.block2(emb.flatten(start_dim=1))))
        logit = 0.5 * (y1 + y2)
        if self.training:
            return {"logit": logit, "logit1": y1, "logit2": y2}
        return logit

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """FuxiCTR's ``add_loss``: the loss of the final logit; for "2B" plus each block's loss against the
        detached ensemble probability."""
        if isinstance(outputs, Tensor):  # "1B", or a "2B" model's eval-mode output
            return loss_fn(outputs, labels)
        logit = outputs["logit"]
        target = torch.sigmoid(logit).detach()
        return loss_fn(logit, labels) + loss_fn(outputs["logit1"], target) + loss_fn(outputs["logit2"], target)
