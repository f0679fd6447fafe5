"""InterHAt: Interpretable Click-Through Rate Prediction through Hierarchical Attention (Li, Cheng, Chen, Chen,
Wang, WSDM 2020).

A transformer block encodes the field embeddings ``X0`` [B, F, D]; a hierarchy of attentional aggregations builds
interactions of increasing order from the encoding ``X1``; an MLP scores the attended summary:

    X1 = FFN(MHSA(X0))          MHSA: Q/K/V of H heads x attention_dim, scaled by sqrt(attention_dim), ReLU,
                                dropout, residual, LayerNorm; FFN: Linear-ReLU-Linear (hidden_dim, default 4D),
                                residual, LayerNorm (bars/models/layers/hierarchical_attention.py)
    u_p = Agg_p(X_p),  X_{p+1} = u_p * X1 + X_p        p = 1 .. order
    logit = MLP(Agg_score([u_1 .. u_order]))           (hidden layers, then a Linear to 1)

``dropout`` is FuxiCTR's ``net_dropout``: on the attention weights, after the attention's ReLU and in the MLP.
``layer_norm`` and ``use_residual`` apply to both the attention and the feed-forward block.
``head_split="reshape"`` (default) splits heads as FuxiCTR does (a plain ``view`` that mixes fields across heads
when num_heads > 1, which produced BARS's numbers); ``"per_head"`` is the standard split.

Parameter names (ours -> FuxiCTR InterHAt): embedding -> embedding_layer; attention.{W_q, W_k, W_v, W_res,
layer_norm} -> multi_head_attention.{...}; feedforward.{ffn, layer_norm} -> feedforward.{...};
hierarchy.aggregation_layers[p].agg / hierarchy.attentional_score.agg -> aggregation_layers[p].agg /
attentional_score.agg; mlp.net.* -> mlp.mlp.*. Initialisation: the project default (FuxiCTR's); LayerNorm 1/0.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import (
    MLP,
    FeatureEmbedding,
    HierarchicalAttention,
    PositionwiseFeedForward,
    TransformerSelfAttention,
)
from bars.models.layers.hierarchical_attention import HeadSplit
from bars.models.registry import register


@dataclass(frozen=True)
class InterHAtConfig:
    embedding_dim: int
    hidden_dim: int | None = None  # feed-forward and aggregation width; None = 4 * embedding_dim
    order: int = 3
    num_heads: int = 1
    attention_dim: int = 40  # per head
    hidden_units: tuple[int, ...] = (64,)
    activation: str = "relu"
    batch_norm: bool = False
    layer_norm: bool = True
    use_residual: bool = True
    dropout: float = 0.0
    head_split: HeadSplit = "reshape"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        if self.hidden_dim is not None:
            check_dim("hidden_dim", self.hidden_dim)
        check_dim("order", self.order)
        check_dim("num_heads", self.num_heads)
        check_dim("attention_dim", self.attention_dim)
        check_units("hidden_units", self.hidden_units)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)
        if self.head_split not in ("reshape", "per_head"):
            raise ValueError(f"head_split {self.head_split!r} is not one of ('reshape', 'per_head')")


@register("interhat", InterHAtConfig)
class InterHAt(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: InterHAtConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        hidden = cfg.hidden_dim if cfg.hidden_dim is not None else 4 * d
        self.embedding = FeatureEmbedding(spec, d)
        self.attention = TransformerSelfAttention(
            d,
            cfg.attention_dim,
            cfg.num_heads,
            dropout=cfg.dropout,
            use_residual=cfg.use_residual,
            layer_norm=cfg.layer_norm,
            head_split=cfg.head_split,
        )
        self.feedforward = PositionwiseFeedForward(d, hidden, use_residual=cfg.use_residual, layer_norm=cfg.layer_norm)
        self.hierarchy = HierarchicalAttention(d, hidden, cfg.order)
        self.mlp = MLP(d, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x1 = self.feedforward(self.attention(self.embedding(batch)))
        return logits(self.mlp(self.hierarchy(x1)))
