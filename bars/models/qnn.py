"""QNN-alpha (Li et al., "Revisiting Feature Interactions from the Perspective of Quadratic Neural Networks for
Click-through Rate Prediction", KDD 2025): stacked quadratic layers (multi-head Khatri-Rao products,
:class:`bars.models.layers.QuadraticLayer`) over the flat field embeddings, trained with the self-ensemble loss.

    x_0 = flat(E) [B, F*E];  x_{l+1} = Dropout(QuadraticLayer_l(x_l));  logit = fc(x_L)

Self-ensemble loss (FuxiCTR's / the authors' ``add_loss``): in training the network runs twice on the same
embeddings (two dropout draws), giving logits ``l1, l2`` and probabilities ``p1, p2``; with ``p = (p1 + p2) / 2``

    loss(p, y) + loss(p1, sg(p)) + loss(p2, sg(p))       (sg: no gradient; ``loss`` = train.loss)

In training mode the model returns ``{"logit": logit(p), "logit1": l1, "logit2": l2}`` (``logit(p)`` computed
stably from ``l1, l2``: ``logaddexp(logsig l1, logsig l2) - logaddexp(logsig -l1, logsig -l2)``, so the first term,
the trainer's loss on a logit, sees ``p``; the distillation target ``sg(p)`` is ``(sigmoid(l1) + sigmoid(l2)) / 2``
as FuxiCTR rounds it); in eval mode one pass, the logits ``[B]`` (no extra inference cost).

Config -> FuxiCTR ``QNN_alpha`` (model_zoo/QNN/src/QNN_alpha.py; its defaults in model_config.yaml
``QNN_alpha_default``): num_layers, num_heads, num_row, ``dropout`` = net_dropout (inside each layer on the
projection and after each layer, as FuxiCTR), batch_norm. embedding_dim must be divisible by num_heads.
Parameters: ``embedding.weight`` = embedding_layer, ``layers[l].linear/bn`` = qnn.layer[l].linear[0]/[1],
``fc`` = qnn.fc.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout, logits
from bars.models.layers import Dropout, FeatureEmbedding, QuadraticLayer
from bars.models.registry import register


@dataclass(frozen=True)
class QNNConfig:
    embedding_dim: int
    num_layers: int = 3
    num_heads: int = 1
    num_row: int = 3
    dropout: float = 0.1
    batch_norm: bool = True

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_layers", self.num_layers)
        check_dim("num_heads", self.num_heads)
        check_dim("num_row", self.num_row)
        check_dropout("dropout", self.dropout)
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide embedding_dim {self.embedding_dim} (each head "
                             f"takes an equal part of every field's embedding)")


def mean_probability_logit(l1: Tensor, l2: Tensor) -> Tensor:
    """``logit((sigmoid(l1) + sigmoid(l2)) / 2)``, computed in log space (no rounding of probabilities near 0 or
    1): ``log(p1 + p2) - log((1 - p1) + (1 - p2))``."""
    sig = F.logsigmoid
    return torch.logaddexp(sig(l1), sig(l2)) - torch.logaddexp(sig(-l1), sig(-l2))


@register("qnn", QNNConfig)
class QNN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: QNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f = self.embedding.num_fields
        self.layers = nn.ModuleList(
            QuadraticLayer(f, cfg.embedding_dim, cfg.num_row, cfg.num_heads, cfg.batch_norm, cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.dropouts = nn.ModuleList(Dropout(cfg.dropout) for _ in range(cfg.num_layers)) if cfg.dropout > 0 else None
        self.fc = nn.Linear(self.embedding.output_dim, 1)

    def _net(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.dropouts is not None:
                x = self.dropouts[i](x)
        return logits(self.fc(x))

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        x = self.embedding.flat(batch)
        if not self.training:
            return self._net(x)
        l1, l2 = self._net(x), self._net(x)
        return {"logit": mean_probability_logit(l1, l2), "logit1": l1, "logit2": l2}

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The self-ensemble loss (module docstring); an eval-mode output (one pass) gets the plain loss."""
        if isinstance(outputs, Tensor):
            return loss_fn(outputs, labels)
        l1, l2 = outputs["logit1"], outputs["logit2"]
        target = ((torch.sigmoid(l1) + torch.sigmoid(l2)) * 0.5).detach()  # p, as FuxiCTR rounds it
        return loss_fn(outputs["logit"], labels) + loss_fn(l1, target) + loss_fn(l2, target)
