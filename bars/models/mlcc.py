"""MLCC and MC-MLCC (Yu, Zhou, Xia, Zhao, Wu, Zhao, Kong, Bilibili, "Compress, Cross and Scale: Multi-Level
Compression Cross Networks for Efficient Scaling in Recommender Systems", arXiv 2602.12041, 2026). No public code
exists and the model is not in FuxiCTR; only the paper's abstract could be retrieved here (the stored arxiv.org
abstract and HTML pages and their aggregator copies give nothing past the abstract), so this is built from the
abstract's words and EVERY choice below is an assumption, listed with its alternatives in docs/fidelity.md
("MLCC") and tested against these equations in tests/test_models_mlcc.py (and
tests/reference/fuxictr_zoo/mlcc.py, ``PAPER_ONLY``).

What the abstract fixes: feature tokens; a Global Compressor summarises all tokens into a global context;
Progressive Layered Crossing crosses the tokens with it dynamically, layer by layer; a Local Compressor refines
the token representations; MC-MLCC splits the interaction into parallel channels (subspaces) for horizontal
scaling; the scaling axes are embedding dimension, head number and channel count.

    E  = field embeddings                                       [B, F, D]   (tokens: one per field)
    channel c = 1..C:
      X_0^c = E P_c  (P_c [D, d], no bias)                      [B, F, d]   (one channel and channel_dim null: E)
      G^c   = A^c X_0^c                 (A^c [K, F])            [B, K, d]   Global Compressor, K = num_heads
      ctx^c = flat(G^c)                                         [B, K*d]    the global context (computed once)
      for l = 1..L (num_layers):
        Y     = X_{l-1} * (W_l ctx + b_l) + X_{l-1}   (W_l [F*d, K*d], viewed per token [F, d])   crossing
        Y     = Y + V2_l relu(V1_l Y + a_l) + a2_l    (V1_l [r, d], V2_l [d, r], each token)   Local Compressor
        X_l^c = LayerNorm_l(Y)                        (layer_norm; over each token's d)
    h     = [flat(X_L^1), ..., flat(X_L^C)]                     [B, C*F*d]  channels concatenated
    logit = MLP(h) -> Linear(1)                                 (hidden_units, activation, batch_norm, dropout)

Keys: ``num_channels`` C (1: MLCC; > 1: MC-MLCC, conf/model/mc_mlcc.yaml), ``channel_dim`` d (null: D; with one
channel and null there is no projection, the channel reads the embeddings), ``num_heads`` K (the global tokens),
``num_layers`` L, ``local_dim`` r (null: no Local Compressor), ``layer_norm``, and the output MLP's
``hidden_units`` / ``activation`` / ``batch_norm`` / ``dropout`` (dropout only in the output MLP).
Initialisation: the project's (BARS): every Linear xavier-normal with zero bias (A, W_l, V, P included), LayerNorm
ones/zeros, embeddings N(0, std); every non-embedding weight is under the net regulariser.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding, MultiChannelCompressionCross
from bars.models.registry import register


@dataclass(frozen=True)
class MLCCConfig:
    """Defaults: our assumptions (no code, no published configuration was retrievable; docs/fidelity.md)."""

    embedding_dim: int
    num_channels: int = 1  # C: 1 = MLCC, > 1 = MC-MLCC
    channel_dim: int | None = None  # d, each channel's token width (null: embedding_dim)
    num_heads: int = 4  # K: global tokens of the Global Compressor
    num_layers: int = 3  # L: crossing layers
    local_dim: int | None = 4  # r: the Local Compressor's bottleneck width (null: no Local Compressor)
    layer_norm: bool = True  # LayerNorm over each token after each layer
    hidden_units: tuple[int, ...] = (400, 400, 400)  # the output MLP (then Linear(1))
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0  # the output MLP's hidden layers

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_channels", self.num_channels)
        if self.channel_dim is not None:
            check_dim("channel_dim", self.channel_dim)
        check_dim("num_heads", self.num_heads)
        check_dim("num_layers", self.num_layers)
        if self.local_dim is not None:
            check_dim("local_dim", self.local_dim)
        check_units("hidden_units", self.hidden_units)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)

    @property
    def token_dim(self) -> int:
        return self.channel_dim if self.channel_dim is not None else self.embedding_dim

    @property
    def project(self) -> bool:
        """Each channel maps the embeddings by its own projection (several channels, or a channel_dim set)."""
        return self.num_channels > 1 or self.channel_dim is not None


@register("mlcc", MLCCConfig)
class MLCC(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: MLCCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.interaction = MultiChannelCompressionCross(
            self.embedding.num_fields, cfg.embedding_dim, cfg.num_channels, cfg.token_dim, cfg.project,
            cfg.num_heads, cfg.num_layers, cfg.local_dim, cfg.layer_norm)
        self.mlp = MLP(self.interaction.output_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout,
                       output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.mlp(self.interaction(self.embedding(batch))))
