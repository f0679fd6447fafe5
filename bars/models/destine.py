"""DESTINE (Xu et al., "Disentangled Self-Attentive Neural Networks for Click-Through Rate Prediction",
CIKM 2021).

    X_0 = E (field embeddings [B, F, D]);  X_{l+1} = DSA_l(X_l)   (l = 1..L)
    DSA(X) = (softmax_j(<q_i - mean q, k_j - mean k> [/ sqrt(d)]) + softmax_j(u_j)) V  [+ W_res X]
    logit  = attn_fc(flat(X_L [+ W_res E if residual_mode == last_layer])) [+ LR] [+ MLP(flat E)]

(disentangled self-attention: a whitened pairwise term plus a unary term per key field;
:class:`bars.models.layers.DisentangledSelfAttention`).

Config -> FuxiCTR ``DESTINE`` (model_zoo/DESTINE/src/DESTINE.py; BARS ran v1.2.2): attention_dim,
num_heads, attention_layers, dnn_hidden_units (``[]``: no MLP), ``activation`` = dnn_activations,
``dropout`` = net_dropout (the MLP), ``attention_dropout`` = att_dropout (the attention weights),
relu_before_att, batch_norm (the MLP), use_scale, use_wide (an LR term with its bias), ``residual_mode`` =
residual_mode (``"none"`` = FuxiCTR None), ``head_split`` (not in FuxiCTR: ``"view"`` is what 2.3.10 computes,
``"columns"`` the per-head split; they differ only with num_heads > 1 — see the layer. FuxiCTR 1.2.2, which
produced the BARS numbers, split q/k/v by columns but reshaped the unary logits with a plain view, mixing
samples of a batch when num_heads > 1; every BARS run used one head, where all three agree).
Parameters: ``embedding.weight`` = embedding_layer, ``attention[l].W_*`` = self_attns[l].W_*, ``attn_fc``,
``W_res`` (last_layer mode), ``lr`` = lr, ``dnn.net`` = dnn.mlp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, DisentangledSelfAttention, FeatureEmbedding, LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class DESTINEConfig:
    embedding_dim: int
    attention_dim: int = 16
    num_heads: int = 2
    attention_layers: int = 2
    dnn_hidden_units: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    relu_before_att: bool = False
    batch_norm: bool = False
    use_scale: bool = False
    use_wide: bool = True
    residual_mode: Literal["each_layer", "last_layer", "none"] = "each_layer"
    head_split: Literal["view", "columns"] = "view"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("attention_dim", self.attention_dim)
        check_dim("num_heads", self.num_heads)
        check_dim("attention_layers", self.attention_layers)
        if self.attention_dim % self.num_heads:
            raise ValueError(f"attention_dim {self.attention_dim} is not divisible by num_heads {self.num_heads}")
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)
        check_dropout("attention_dropout", self.attention_dropout)


@register("destine", DESTINEConfig)
class DESTINE(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DESTINEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, a = cfg.embedding_dim, cfg.attention_dim
        self.embedding = FeatureEmbedding(spec, d)
        self.attention = nn.ModuleList(
            DisentangledSelfAttention(d if i == 0 else a, a, cfg.num_heads, cfg.attention_dropout,
                                      cfg.residual_mode == "each_layer", cfg.use_scale, cfg.relu_before_att,
                                      cfg.head_split)
            for i in range(cfg.attention_layers)
        )
        self.W_res = nn.Linear(d, a) if cfg.residual_mode == "last_layer" else None
        self.attn_fc = nn.Linear(self.embedding.num_fields * a, 1)
        self.lr = LogisticRegression(spec, use_bias=True) if cfg.use_wide else None
        self.dnn = (
            MLP(self.embedding.output_dim, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
            if cfg.dnn_hidden_units
            else None
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        x = emb
        for layer in self.attention:
            x = layer(x)
        if self.W_res is not None:
            x = x + self.W_res(emb)
        out = self.attn_fc(x.flatten(start_dim=1))
        if self.lr is not None:
            out = out + self.lr(batch)
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(start_dim=1))
        return logits(out)
