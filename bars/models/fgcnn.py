"""FGCNN: Feature Generation by Convolutional Neural Network (Liu, Tang, Chen, Yu, Guo, Zhang, "Feature Generation by
Convolutional Neural Network for Click-Through Rate Prediction", WWW 2019), as FuxiCTR 2.3.10's
``model_zoo/FGCNN/src/FGCNN.py`` computes it (BARS ran FuxiCTR 1.0.2's, the same function).

    E  = embedding(x)                       [B, F, D]  (the classifier's raw features)
    E' = fg_embedding(x)                    [B, F, D]  (a second table for the generator; E itself when
                                                        share_embedding)
    G  = FeatureGeneration(E')              [B, N, D]  (conv + pool + recombination per layer, concatenated;
                                                        bars.models.layers.FeatureGeneration)
    Z  = [E; G]                             [B, T, D], T = F + N
    logit = MLP([flatten(Z); <z_i, z_j> for i < j])     (IPNN's classifier over raw and generated features)

``kernel_heights``, ``pooling_sizes`` and ``recombined_channels`` are one int for every layer or one per layer
(FuxiCTR's ``validate_input``). Kernel heights must be odd, and each pooling size must give the pooled height
``ceil(H / p)`` under FuxiCTR's padding (``p`` = 2 always does); otherwise FuxiCTR fails on a shape mismatch, and
here it is a ModelConfigError naming the key.

Parameter names (ours -> FuxiCTR FGCNN): ``embedding`` -> ``embedding_layer``; ``fg_embedding`` ->
``fg_embedding_layer`` (absent when share_embedding); ``generator`` -> ``fgcnn_layer`` (see FeatureGeneration);
``mlp`` -> ``dnn`` (MLP_Block: per hidden layer Linear, BatchNorm when ``batch_norm``, activation, dropout; output
Linear to 1). Regularisers: both embedding tables are the embedding regulariser's, everything else (convolutions,
their BatchNorms, recombination and MLP) the net's, as in FuxiCTR.

The MLP keys are ``dnn_hidden_units`` and ``activation`` / ``batch_norm`` / ``dropout`` (FuxiCTR's
``dnn_activations`` / ``dnn_batch_norm`` / ``net_dropout``: the dropout is the MLP's only); unset, they are
FuxiCTR's defaults (relu, no batch norm, no dropout). With BN in the convolutions and learning rate 1e-3, BARS saw
FGCNN stall at AUC 0.5 on Avazu_x4 (reczoo/BARS#10, fixed by lr 5e-4 or another seed): its search space has lr
5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_units, logits, part_keys
from bars.models.layers import MLP, FeatureEmbedding, FeatureGeneration, InnerProductInteraction
from bars.models.registry import ModelConfigError, register

#: FuxiCTR FGCNN's MLP defaults (dnn_activations ReLU, dnn_batch_norm False, net_dropout 0)
FGCNN_MLP_DEFAULTS = {"activation": "relu", "batch_norm": False, "dropout": 0.0}


@dataclass(frozen=True)
class FGCNNConfig:
    """Defaults: FuxiCTR 2.3.10 FGCNN's constructor defaults (conf/model/fgcnn.yaml: its FGCNN_default)."""

    embedding_dim: int
    share_embedding: bool = False
    channels: tuple[int, ...] = (14, 16, 18, 20)
    kernel_heights: int | tuple[int, ...] = 7
    pooling_sizes: int | tuple[int, ...] = 2
    recombined_channels: int | tuple[int, ...] = 2
    conv_activation: str = "tanh"
    conv_batch_norm: bool = True
    dnn_hidden_units: tuple[int, ...] = (4096, 2048, 1024, 512)
    activation: str | None = None
    batch_norm: bool | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        part_keys(self, bool(self.dnn_hidden_units), FGCNN_MLP_DEFAULTS, "dnn_hidden_units is empty (no hidden layer)")
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        if self.activation is not None:
            check_activation("activation", self.activation)
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.channels:
            raise ValueError("channels must have at least one convolution layer")
        check_units("channels", self.channels)
        n = len(self.channels)
        for key in ("kernel_heights", "pooling_sizes", "recombined_channels"):
            v = getattr(self, key)
            vals = (v,) * n if isinstance(v, int) else v
            if len(vals) != n:
                raise ValueError(
                    f"{key} {v} has {len(vals)} values for {n} convolution layers (channels {self.channels}): give "
                    f"one per layer or a single int"
                )
            check_units(key, vals)
        even = [h for h in self.layer("kernel_heights") if h % 2 == 0]
        if even:
            raise ValueError(
                f"kernel_heights {self.kernel_heights}: even heights {even} shrink the field axis (FGCNN pads "
                f"(h - 1) // 2 rows on both sides; FuxiCTR then fails on a shape mismatch); use odd heights"
            )
        check_activation("conv_activation", self.conv_activation)

    def layer(self, key: str) -> tuple[int, ...]:
        """``key`` (kernel_heights, pooling_sizes, recombined_channels) as one value per convolution layer."""
        v = getattr(self, key)
        return (v,) * len(self.channels) if isinstance(v, int) else tuple(v)


@register("fgcnn", FGCNNConfig)
class FGCNN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FGCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(spec, d)
        self.fg_embedding = None if cfg.share_embedding else FeatureEmbedding(spec, d)
        f = self.embedding.num_fields
        try:
            self.generator = FeatureGeneration(
                f, d, cfg.channels, cfg.layer("kernel_heights"), cfg.layer("pooling_sizes"),
                cfg.layer("recombined_channels"), cfg.conv_activation, cfg.conv_batch_norm,
            )
        except ValueError as e:
            raise ModelConfigError(f"fgcnn ({f} fields): {e}") from None
        total = f + self.generator.num_generated
        self.inner = InnerProductInteraction(total, "inner_product")
        self.mlp = MLP(
            total * d + self.inner.num_pairs, cfg.dnn_hidden_units, cfg.activation or "relu", bool(cfg.batch_norm),
            cfg.dropout or 0.0, output_dim=1,
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        fg = emb if self.fg_embedding is None else self.fg_embedding(batch)
        z = torch.cat([emb, self.generator(fg)], dim=1)
        return logits(self.mlp(torch.cat([z.flatten(start_dim=1), self.inner(z)], dim=1)))
