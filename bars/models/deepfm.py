"""DeepFM (Guo et al. 2017): logit = first-order + FM second-order + MLP, all over one shared embedding."""

from __future__ import annotations

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import DeepConfig, logits
from bars.models.layers import MLP, FeatureEmbedding, FMInteraction, LogisticRegression
from bars.models.registry import register


class DeepFMConfig(DeepConfig):
    """embedding_dim, hidden_units, activation, batch_norm, dropout (see DeepConfig)."""


@register("deepfm", DeepFMConfig)
class DeepFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DeepFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        # FuxiCTR's FactorizationMachine keeps the LR bias next to the MLP's output bias: two biases (Adam moves
        # their sum at twice the rate of one; docs/fidelity.md)
        self.lr = LogisticRegression(spec, use_bias=True)
        self.fm = FMInteraction()
        self.mlp = MLP(self.embedding.output_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        return logits(self.lr(batch) + self.fm(emb) + self.mlp(emb.flatten(start_dim=1)))
