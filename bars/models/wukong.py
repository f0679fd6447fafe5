"""WuKong (Zhang et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation", ICML 2024), as FuxiCTR
2.3.10's ``model_zoo/WuKong/src/WuKong.py`` computes it (Meta published no code; BARS has no WuKong result).

    X_0 = embedding(x)                                        [B, F, D]
    X_l = WuKongLayer_l(X_{l-1})                              [B, m_f + m_l, D]   (l = 1 .. num_wukong_layers)
        = LayerNorm_D([FMB(X_{l-1}); LCB(X_{l-1})] + residual(X_{l-1}))
    logit = MLP(flatten(X_L))

FMB (factorization machine block): ``ReLU(MLP_f(LayerNorm(flatten(X (X^T Y)))))`` read as ``m_f`` new embeddings
(``Y`` [n, k]: a learned projection, rank ``fmb_rank_k``; ``null``: the full ``X X^T``); LCB (linear compression
block): a Linear over the feature axis to ``m_l`` embeddings; residual: the input itself, or a Linear over the
feature axis where the width changes (bars.models.layers.WuKongLayer).

Keys (ours -> FuxiCTR WuKong): ``num_wukong_layers``, ``lcb_features``, ``fmb_features``, ``fmb_mlp_units``,
``fmb_mlp_activation`` (``fmb_mlp_activations``), ``fmb_rank_k`` (``fmp_rank_k``), ``mlp_hidden_units``,
``mlp_activation`` (``mlp_hidden_activations``), ``batch_norm`` (``mlp_batch_norm``: the top MLP's), ``layer_norm``,
``dropout`` (``net_dropout``: FuxiCTR applies it in the FMB MLPs only; the top MLP has none). Parameters: ``embedding``
-> ``embedding_layer``; ``layers[i]`` -> ``wukong_stack[i]`` (``fmb.proj`` -> ``fmb.proj_Y``, ``fmb.mlp`` ->
``fmb.mlp``, ``lcb`` -> ``lcb.linear``); ``mlp`` -> ``fc``. Initialisation as FuxiCTR: Linears xavier-normal (zero
bias), the projections N(0, 1), LayerNorms ones/zeros; the projections are net parameters (net regulariser).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models.layers import MLP, FeatureEmbedding, WuKongLayer
from bars.models.registry import register


@dataclass(frozen=True)
class WuKongConfig:
    """Defaults: FuxiCTR 2.3.10 WuKong's constructor defaults (conf/model/wukong.yaml: its WuKong_default)."""

    embedding_dim: int
    num_wukong_layers: int = 3
    lcb_features: int = 40
    fmb_features: int = 40
    fmb_mlp_units: tuple[int, ...] = (32, 32)
    fmb_mlp_activation: str = "relu"
    fmb_rank_k: int | None = 8
    mlp_hidden_units: tuple[int, ...] = (32, 32)
    mlp_activation: str = "relu"
    batch_norm: bool = True
    layer_norm: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_wukong_layers", self.num_wukong_layers)
        check_dim("lcb_features", self.lcb_features)
        check_dim("fmb_features", self.fmb_features)
        if self.fmb_rank_k is not None:
            check_dim("fmb_rank_k", self.fmb_rank_k)
        check_units("fmb_mlp_units", self.fmb_mlp_units)
        check_units("mlp_hidden_units", self.mlp_hidden_units)
        check_activation("fmb_mlp_activation", self.fmb_mlp_activation)
        check_activation("mlp_activation", self.mlp_activation)
        check_dropout("dropout", self.dropout)


@register("wukong", WuKongConfig)
class WuKong(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: WuKongConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(spec, d)
        n, layers = self.embedding.num_fields, []
        for _ in range(cfg.num_wukong_layers):
            layers.append(WuKongLayer(n, cfg.lcb_features, cfg.fmb_features, d, cfg.fmb_rank_k, cfg.fmb_mlp_units,
                                      cfg.fmb_mlp_activation, cfg.dropout, cfg.layer_norm))
            n = layers[-1].output_features
        self.layers = nn.Sequential(*layers)
        self.mlp = MLP(n * d, cfg.mlp_hidden_units, cfg.mlp_activation, cfg.batch_norm, 0.0, output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        xt = self.embedding(batch).transpose(1, 2).contiguous()  # [B, D, F]: the layers' transposed layout
        for layer in self.layers:
            xt = layer.forward_t(xt)
        # the MLP's first Linear takes flatten(X_L) in (feature, dimension) order; here its weight's columns are
        # taken in (dimension, feature) order instead, so X_L^T flattens as it lies (no transposed copy of the
        # activations forward, nor of their gradient backward)
        first = self.mlp.net[0]
        assert isinstance(first, nn.Linear)
        b, d, n = xt.shape
        w = first.weight.view(-1, n, d).transpose(1, 2).reshape(-1, d * n)
        return logits(self.mlp.net[1:](F.linear(xt.reshape(b, d * n), w, first.bias)))
