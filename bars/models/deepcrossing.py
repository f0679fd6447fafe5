"""DeepCrossing (Shan et al., "Deep Crossing: Web-Scale Modeling without Manually Crafted Combinatorial
Features", KDD 2016; FuxiCTR ``model_zoo/DeepCrossing``; BARS folders ``DeepCross_*``).

    x_0 = [e_1, ..., e_F]                                  (flat embeddings, width F*D)
    residual unit l:  x_l = dropout(act(BN(W2 act(W1 x_{l-1} + b1) + b2 + x_{l-1})))
    logit = w^T x_L + b

Each unit maps F*D -> residual_blocks[l] -> F*D; ``use_residual = false`` drops the ``+ x_{l-1}``; BatchNorm
(``batch_norm``) sits after the sum, before the activation, as FuxiCTR's ``ResidualBlock``. As there, one
activation module serves both places in a unit (it matters only for a parametrised activation such as prelu).

Parameters <-> FuxiCTR 2.3.10 ``DeepCrossing``: ``embedding`` = ``embedding_layer``; ``crossing_layer.<l>.layer.0``
/ ``.layer.2`` = ``crossing_layer.<l>.layer.0`` / ``.layer.2`` (the two Linear of unit l);
``crossing_layer.<l>.batch_norm`` = same name; ``crossing_layer.<L>`` = the output Linear (F*D -> 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import Dropout, FeatureEmbedding, activation
from bars.models.registry import register


@dataclass(frozen=True)
class DeepCrossingConfig:
    embedding_dim: int
    residual_blocks: tuple[int, ...] = (500, 500, 500)  # hidden width of each residual unit
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    use_residual: bool = True

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("residual_blocks", self.residual_blocks)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)


class ResidualBlock(nn.Module):
    """One residual unit ``dropout(act(BN(W2 act(W1 x) + x)))`` of width ``input_dim`` around ``hidden_dim``."""

    def __init__(self, input_dim: int, hidden_dim: int, activation_name: str, dropout: float, use_residual: bool,
                 batch_norm: bool) -> None:
        super().__init__()
        # in place (ReLU only): its inputs are a Linear's output and the residual sum (or BN's output), none of
        # which a backward needs; one fewer [B, width] allocation per use, the same values
        self.activation_layer = activation(activation_name, inplace=True)
        self.layer = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), self.activation_layer, nn.Linear(hidden_dim, input_dim)
        )
        self.use_residual = use_residual
        self.batch_norm = nn.BatchNorm1d(input_dim) if batch_norm else None
        self.dropout = Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(x)
        if self.use_residual:
            out = out.add_(x)  # in place on the Linear's output (its backward does not read it)
        if self.batch_norm is not None:
            out = self.batch_norm(out)
        out = self.activation_layer(out)
        return self.dropout(out) if self.dropout is not None else out


@register("deepcrossing", DeepCrossingConfig)
class DeepCrossing(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DeepCrossingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        blocks: list[nn.Module] = [
            ResidualBlock(d, h, cfg.activation, cfg.dropout, cfg.use_residual, cfg.batch_norm)
            for h in cfg.residual_blocks
        ]
        blocks.append(nn.Linear(d, 1))
        self.crossing_layer = nn.Sequential(*blocks)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.crossing_layer(self.embedding.flat(batch)))
