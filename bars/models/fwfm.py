"""FwFM: field-weighted factorization machine (Pan et al., "Field-weighted Factorization Machines for
Click-Through Rate Prediction in Display Advertising", WWW 2018; FuxiCTR ``model_zoo/FwFM``).

    logit = b + sum_{i<j} r_ij <e_i, e_j> + linear term             (one learned scalar r_ij per field pair)
    linear term, by ``linear_type``:
      LW   = sum_f w_f[x_f]                      (a scalar weight per feature value)
      FeLV = sum_f <e_f, v_f[x_f]>               (a second D-dim embedding per feature value)
      FiLV = sum_f <e_f, v_f>                    (one D-dim vector per field)

Parameters <-> FuxiCTR 2.3.10 ``FwFM``: ``embedding`` = ``embedding_layer``; ``interaction_weight`` =
``interaction_weight`` (Linear F(F-1)/2 -> 1 with the bias b; pairs in combinations order); LW:
``linear.embedding`` = ``linear_weight_layer`` (dim-1 FeatureEmbedding, no bias); FeLV: ``linear_embedding`` =
``linear_weight_layer`` (a D-dim FeatureEmbedding: embedding-regularised); FiLV: ``linear`` =
``linear_weight_layer`` (Linear F*D -> 1, no bias: net-regularised).

FuxiCTR's FwFM takes one ``regularizer`` and applies it to embeddings AND net weights; here the trainer owns the
two: to reproduce a BARS FwFM run set ``train.embedding_regularizer`` and ``train.net_regularizer`` to that value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models._pairs import pairwise_fields
from bars.models.layers import FeatureEmbedding, InnerProductInteraction, LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class FwFMConfig:
    embedding_dim: int
    linear_type: Literal["LW", "FeLV", "FiLV"] = "FeLV"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)


@register("fwfm", FwFMConfig)
class FwFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FwFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f = pairwise_fields("fwfm", self.embedding)
        self.inner = InnerProductInteraction(f, "inner_product")
        self.interaction_weight = nn.Linear(self.inner.num_pairs, 1)
        self.linear: nn.Module | None = None
        self.linear_embedding: FeatureEmbedding | None = None
        if cfg.linear_type == "LW":
            self.linear = LogisticRegression(spec, use_bias=False)
        elif cfg.linear_type == "FeLV":
            self.linear_embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        else:
            self.linear = nn.Linear(self.embedding.output_dim, 1, bias=False)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        out = self.interaction_weight(self.inner(emb))  # bias b lives here
        if self.linear_embedding is not None:  # FeLV
            out = out + (emb * self.linear_embedding(batch)).sum(dim=(1, 2)).unsqueeze(1)
        elif self.cfg.linear_type == "LW":
            out = out + self.linear(batch)
        else:  # FiLV
            out = out + self.linear(emb.flatten(start_dim=1))
        return logits(out)
