"""DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems",
arXiv 1906.00091, 2019; FuxiCTR ``model_zoo/DLRM``).

    e_1..e_S = embeddings of the categorical/sequence fields
    d = act(BottomMLP(x_dense))        (when the spec has numeric fields: all of them, one D-dim vector)
    dot: z = [<u_i, u_j> for i < j over u = (e_1..e_S[, d])] (+ [d])     cat: z = flatten(u)
    logit = TopMLP(z)

As FuxiCTR: with ``dot`` the top MLP sees the pairwise inner products (and d), not the embeddings themselves; the
bottom MLP ends in its activation; ``batch_norm`` applies to both MLPs. Numeric fields are read as values
(``[B, n_numeric]``, spec order), not embedded. FuxiCTR 2.3.10 concatenates the 1-d numeric columns along the
batch axis (``torch.cat([X[k] ...], dim=-1)``), which fails for any batch with numeric fields; FuxiCTR 1.2.1, which
produced the BARS DLRM numbers, stacks them as columns, as here. ``bottom_mlp_*`` keys matter only when the
spec has numeric fields (of the BARS splits, only Criteo_x1 has them).

Parameters <-> FuxiCTR 2.3.10 ``DLRM``: ``embedding`` = ``embedding_layer``; ``bottom_mlp`` = ``bottom_mlp``
(``MLP_Block`` input n_numeric, output D with ``output_activation``); ``top_mlp`` = ``top_mlp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding, InnerProductInteraction, activation
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class DLRMConfig:
    embedding_dim: int
    top_mlp_units: tuple[int, ...] = (400, 400, 400)
    top_mlp_activation: str = "relu"
    top_mlp_dropout: float = 0.4
    bottom_mlp_units: tuple[int, ...] = ()
    bottom_mlp_activation: str = "relu"
    bottom_mlp_dropout: float = 0.0
    interaction_op: Literal["dot", "cat"] = "cat"
    batch_norm: bool = True

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        for part in ("top", "bottom"):
            check_units(f"{part}_mlp_units", getattr(self, f"{part}_mlp_units"))
            check_activation(f"{part}_mlp_activation", getattr(self, f"{part}_mlp_activation"))
            check_dropout(f"{part}_mlp_dropout", getattr(self, f"{part}_mlp_dropout"))


@register("dlrm", DLRMConfig)
class DLRM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DLRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.dense_names = tuple(f.name for f in spec.features if f.type == "numeric")
        sparse = [f.name for f in spec.features if f.type != "numeric"]
        self.embedding = FeatureEmbedding(spec, d, fields=sparse) if sparse else None
        self.bottom_mlp: nn.Module | None = None
        if self.dense_names:
            self.bottom_mlp = nn.Sequential(
                MLP(len(self.dense_names), cfg.bottom_mlp_units, cfg.bottom_mlp_activation, cfg.batch_norm,
                    cfg.bottom_mlp_dropout, output_dim=d),
                activation(cfg.bottom_mlp_activation),
            )
        n_fields = len(sparse) + (1 if self.dense_names else 0)
        self.inner: InnerProductInteraction | None = None
        if cfg.interaction_op == "dot":
            if n_fields < 2:
                raise ModelConfigError(
                    f"dlrm interaction_op=dot needs at least 2 fields (the numeric fields count as one); the spec "
                    f"gives {spec.names}"
                )
            self.inner = InnerProductInteraction(n_fields, "inner_product")
            top_in = self.inner.num_pairs + (d if self.dense_names else 0)
        else:
            top_in = n_fields * d
        self.top_mlp = MLP(top_in, cfg.top_mlp_units, cfg.top_mlp_activation, cfg.batch_norm, cfg.top_mlp_dropout, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts: list[Tensor] = []
        if self.embedding is not None:
            parts.append(self.embedding(batch))  # [B, S, D]
        dense = None
        if self.bottom_mlp is not None:
            dtype = self.bottom_mlp[0].net[0].weight.dtype
            x = torch.stack([batch[n] for n in self.dense_names], dim=1).to(dtype)  # [B, n_numeric]
            dense = self.bottom_mlp(x)  # [B, D]
            parts.append(dense.unsqueeze(1))
        feats = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.inner is not None:
            z = self.inner(feats)
            if dense is not None:
                z = torch.cat([z, dense], dim=1)
        else:
            z = feats.flatten(start_dim=1)
        return logits(self.top_mlp(z))
