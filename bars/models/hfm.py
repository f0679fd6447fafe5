"""HFM: Holographic Factorization Machine (Tay, Zhang, Luu, Hui, "Holographic Factorization Machines for
Recommendation", AAAI 2019). HFM+ (``hfm_plus``, bars/models/hfm_plus.py) feeds the pair vectors to an MLP.

An FM whose pairwise inner product is replaced by a holographic (compressed outer) product: for fields i < j

    z_ij = e_i (*) e_j (circular convolution) or e_i (star) e_j (circular correlation) or e_i * e_j   [D]
    HFM:  logit = b + sum_f w_f + w_h . sum_{i<j} z_ij                      w_h: Linear(D, 1, bias=False)
    HFM+: logit = b + sum_f w_f + MLP(flatten([z_ij]))                      (P * D inputs, then a Linear to 1)

Parameter names (ours -> FuxiCTR HFM): embedding -> embedding_layer; lr -> lr_layer (dim-1 embedding + bias);
proj_h -> proj_h (HFM); dnn.net.* -> dnn.mlp.* (HFM+). FuxiCTR runs HFM+ as ``HFM`` with ``use_dnn=True``; here
the two are separate registry entries so neither accepts keys it would ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models.layers import FeatureEmbedding, HolographicInteraction, LogisticRegression
from bars.models.layers.holographic import HOLOGRAPHIC_TYPES, HolographicType
from bars.models.registry import ModelConfigError, register


def check_interaction_type(value: str) -> None:
    if value not in HOLOGRAPHIC_TYPES:
        raise ValueError(f"interaction_type {value!r} is not one of {HOLOGRAPHIC_TYPES}")


@dataclass(frozen=True)
class HFMConfig:
    embedding_dim: int
    interaction_type: HolographicType = "circular_convolution"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_interaction_type(self.interaction_type)


class HolographicFM(nn.Module):
    """The shared part: embeddings, first-order term and the pair vectors ``[B, P, D]``."""

    def __init__(self, spec: FeatureSpec, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.lr = LogisticRegression(spec, use_bias=True)
        try:
            self.hfm = HolographicInteraction(self.embedding.num_fields, cfg.interaction_type)
        except ValueError as e:
            raise ModelConfigError(f"{type(self).__name__.lower()}: {e}") from None


@register("hfm", HFMConfig)
class HFM(HolographicFM):
    def __init__(self, spec: FeatureSpec, cfg: HFMConfig) -> None:
        super().__init__(spec, cfg)
        self.proj_h = nn.Linear(cfg.embedding_dim, 1, bias=False)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        pairs = self.hfm(self.embedding(batch))
        return logits(self.proj_h(pairs.sum(dim=1)) + self.lr(batch))
