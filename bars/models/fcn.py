"""FCN (Li et al., "FCN: Fusing Exponential and Linear Cross Network for Click-Through Rate Prediction", arXiv
2407.13349, first titled "DCNv3: Towards Next Generation Deep Cross Network"; code salmon1802/FCN, whose class is
still ``DCNv3``, and FuxiCTR's model_zoo/DCNv3 of v2.3.3 to 2.3.7) and ECN, its exponential cross network alone
(the authors' ``src/ECN.py``). No MLP: two cross networks with self-mask
(:class:`bars.models.layers.SelfMaskCrossNet`) over the multi-head field embeddings.

    E   = field embeddings [B, F, H*D]      (each field's table is H*D wide: D = embedding_dim per head)
    x_0 = multihead_split(E) [B, H, F*D]    (:func:`bars.models.layers.multihead_split`)
    fcn:  y_d = mean_h ECN(x_0);  y_s = mean_h LCN(x_0);  logit = (y_d + y_s) / 2
    ecn:  logit = mean_h ECN(x_0)

Tri-BCE (the authors' ``add_loss``, through :meth:`FCN.training_loss`), with ``loss`` = train.loss on logits
(FuxiCTR's: sigmoid, then BCE) and ``L = loss(logit, y)``, ``L_d = loss(y_d, y)``, ``L_s = loss(y_s, y)``:

    L + L_d * max(0, L_d - L) + L_s * max(0, L_s - L)

The weights ``max(0, L_x - L)`` are not detached (the authors' code lets the gradient through them, and so does
this). In training mode FCN returns ``{"logit", "logit_d", "logit_s"}``; in eval mode (validation, test, predict,
export) the logits ``[B]``. ECN has no loss of its own (the trainer's).

Config -> the authors' ``DCNv3`` / ``ECN`` (FuxiCTR 2.0.1 BaseModel): embedding_dim (per head), num_heads,
num_deep_cross_layers / num_shallow_cross_layers (ECN: num_cross_layers), ``deep_dropout`` / ``shallow_dropout`` =
deep_net_dropout / shallow_net_dropout (ECN: ``dropout`` = net_dropout), layer_norm, batch_norm. Parameters:
``embedding.weight`` = embedding_layer.embedding_layer (width H*D), ``ecn`` = ECN, ``lcn`` = LCN (``w[l]`` = w[l],
``bias[l]`` = b[l], ``layer_norm[l]``, ``batch_norm[l]``, ``fc`` = dfc / sfc; ECN's fc).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout
from bars.models.layers import FeatureEmbedding, SelfMaskCrossNet, multihead_split
from bars.models.registry import register


@dataclass(frozen=True)
class FCNConfig:
    embedding_dim: int
    num_heads: int = 1
    num_deep_cross_layers: int = 3
    num_shallow_cross_layers: int = 4
    deep_dropout: float = 0.1
    shallow_dropout: float = 0.2
    layer_norm: bool = True
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_heads", self.num_heads)
        check_dim("num_deep_cross_layers", self.num_deep_cross_layers)
        check_dim("num_shallow_cross_layers", self.num_shallow_cross_layers)
        check_dropout("deep_dropout", self.deep_dropout)
        check_dropout("shallow_dropout", self.shallow_dropout)


@dataclass(frozen=True)
class ECNConfig:
    embedding_dim: int
    num_heads: int = 1
    num_cross_layers: int = 4
    dropout: float = 0.1
    layer_norm: bool = True
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_heads", self.num_heads)
        check_dim("num_cross_layers", self.num_cross_layers)
        check_dropout("dropout", self.dropout)


def _embedding(spec: FeatureSpec, embedding_dim: int, num_heads: int) -> tuple[FeatureEmbedding, int]:
    emb = FeatureEmbedding(spec, embedding_dim * num_heads)
    width = emb.num_fields * embedding_dim
    if width % 2:
        raise ValueError(f"embedding_dim {embedding_dim} x {emb.num_fields} fields = {width} is odd: FCN's cross "
                         f"networks need an even width (the self-mask doubles a half-width projection); use an even "
                         f"embedding_dim")
    return emb, width


def _cross(kind, width: int, layers: int, dropout: float, cfg) -> SelfMaskCrossNet:
    return SelfMaskCrossNet(width, layers, kind, layer_norm=cfg.layer_norm, batch_norm=cfg.batch_norm,
                            num_heads=cfg.num_heads, dropout=dropout)


@register("fcn", FCNConfig)
class FCN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FCNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding, width = _embedding(spec, cfg.embedding_dim, cfg.num_heads)
        self.ecn = _cross("exponential", width, cfg.num_deep_cross_layers, cfg.deep_dropout, cfg)
        self.lcn = _cross("linear", width, cfg.num_shallow_cross_layers, cfg.shallow_dropout, cfg)

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        x0 = multihead_split(self.embedding(batch), self.cfg.num_heads)
        y_d = self.ecn(x0).mean(dim=1).squeeze(-1)
        y_s = self.lcn(x0).mean(dim=1).squeeze(-1)
        logit = (y_d + y_s) * 0.5
        if self.training:
            return {"logit": logit, "logit_d": y_d, "logit_s": y_s}
        return logit

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Tri-BCE (module docstring); an eval-mode output (the logits alone) gets the plain loss."""
        if isinstance(outputs, Tensor):
            return loss_fn(outputs, labels)
        loss = loss_fn(outputs["logit"], labels)
        total = loss
        for key in ("logit_d", "logit_s"):
            sub = loss_fn(outputs[key], labels)
            gap = sub - loss
            total = total + sub * torch.where(gap > 0, gap, torch.zeros_like(gap))
        return total


@register("ecn", ECNConfig)
class ECN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: ECNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding, width = _embedding(spec, cfg.embedding_dim, cfg.num_heads)
        self.ecn = _cross("exponential", width, cfg.num_cross_layers, cfg.dropout, cfg)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x0 = multihead_split(self.embedding(batch), self.cfg.num_heads)
        return self.ecn(x0).mean(dim=1).squeeze(-1)
