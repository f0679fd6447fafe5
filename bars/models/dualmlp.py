"""DualMLP: two plain MLP streams over the same flat embeddings, logits summed (Mao et al., "FinalMLP: An
Enhanced Two-Stream MLP Model for CTR Prediction", AAAI 2023, where it is the two-stream baseline that FinalMLP
extends with feature selection and bilinear fusion; FuxiCTR ``model_zoo/FinalMLP/src/DualMLP.py``).

    x = [e_1, ..., e_F];   logit = MLP_1(x) + MLP_2(x)       (each MLP ends in a Linear to 1 with a bias)

No BARS result exists for DualMLP. Parameters <-> FuxiCTR 2.3.10 ``DualMLP``: ``embedding`` = ``embedding_layer``;
``mlp1`` / ``mlp2`` = ``mlp1`` / ``mlp2`` (``MLP_Block``: per hidden layer Linear [+ BatchNorm] + activation
[+ dropout], output Linear to 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class DualMLPConfig:
    embedding_dim: int
    mlp1_hidden_units: tuple[int, ...] = (64, 32)
    mlp1_activation: str = "relu"
    mlp1_batch_norm: bool = False
    mlp1_dropout: float = 0.0
    mlp2_hidden_units: tuple[int, ...] = (64, 64, 64)
    mlp2_activation: str = "relu"
    mlp2_batch_norm: bool = False
    mlp2_dropout: float = 0.0

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        for i in (1, 2):
            check_units(f"mlp{i}_hidden_units", getattr(self, f"mlp{i}_hidden_units"))
            check_activation(f"mlp{i}_activation", getattr(self, f"mlp{i}_activation"))
            check_dropout(f"mlp{i}_dropout", getattr(self, f"mlp{i}_dropout"))


@register("dualmlp", DualMLPConfig)
class DualMLP(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DualMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        self.mlp1 = MLP(d, cfg.mlp1_hidden_units, cfg.mlp1_activation, cfg.mlp1_batch_norm, cfg.mlp1_dropout, 1)
        self.mlp2 = MLP(d, cfg.mlp2_hidden_units, cfg.mlp2_activation, cfg.mlp2_batch_norm, cfg.mlp2_dropout, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        flat = self.embedding.flat(batch)
        return logits(self.mlp1(flat) + self.mlp2(flat))
