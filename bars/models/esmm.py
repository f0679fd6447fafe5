"""ESMM: Entire Space Multi-task Model (Ma et al., SIGIR 2018). Two towers on shared field embeddings, one for
the click-through rate and one for the post-click conversion rate; their product is the click-AND-conversion
rate, ``pCTCVR = pCTR * pCVR``. Both supervised terms are over every impression: BCE(pCTR, click) +
BCE(pCTCVR, click AND conversion). pCVR has no loss of its own: it is learnt through the product over the
entire space, not on clicked rows only (no sample-selection bias; the paper's equations (2) and (3)).

Not in FuxiCTR. The paper's towers are MLPs over the concatenated embeddings (its Figure 2); each tower here is
``MLP(tower_hidden_units) -> Linear(1)`` with the model's activation, dropout and batch norm.

Labels (the trainer's multi-task API, :mod:`bars.objective`): ``tasks`` are the spec's two label columns in its
``labels`` order, one the CTR label (``ctr_label``) and the other the entire-space CTCVR label
(``ctcvr_label``: 1 = clicked and converted); ``null`` for both takes the spec's first label as CTR and its
second as CTCVR. ``forward`` returns the logits [B, 2] of pCTR and pCTCVR in the task order, so validation, test
and the leaderboard score CTR and CTCVR per task; :meth:`ESMM.cvr_logits` gives pCVR's logits.
:meth:`ESMM.training_loss` is the paper's loss (``train.loss`` applied to the CTR and CTCVR logits)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bars.data.spec import FeatureSpec
from bars.models._multitask import check_multitask, towers
from bars.models.layers import FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class ESMMConfig:
    """Towers [360, 200, 80] (the paper's Figure 2 MLP widths), ReLU, no dropout, no batch norm."""

    embedding_dim: int
    tower_hidden_units: tuple[int, ...] = (360, 200, 80)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    ctr_label: str | None = None    # the click label column; null: the spec's first label
    ctcvr_label: str | None = None  # the click-AND-conversion label column; null: the spec's second label

    def __post_init__(self) -> None:
        check_multitask(self, optional_units=("tower_hidden_units",))
        if (self.ctr_label is None) != (self.ctcvr_label is None):
            raise ValueError("set both ctr_label and ctcvr_label, or neither (null: the spec's first and second "
                             "labels)")
        if self.ctr_label is not None and self.ctr_label == self.ctcvr_label:
            raise ValueError(f"ctr_label and ctcvr_label must be two different label columns, both are "
                             f"{self.ctr_label!r}")


def esmm_labels(spec: FeatureSpec, cfg: ESMMConfig) -> tuple[str, str]:
    """(CTR label, CTCVR label) of ``spec`` under ``cfg``; a clear error naming the key when one is missing."""
    labels = list(spec.labels)
    if cfg.ctr_label is None:
        if len(labels) != 2:
            raise ValueError(f"ESMM needs a CTR label and a CTCVR (click AND conversion) label; dataset "
                             f"{spec.dataset!r} has labels {labels}: set model.params.ctr_label and "
                             f"model.params.ctcvr_label (and select those two columns with data.labels)")
        return labels[0], labels[1]
    for key in ("ctr_label", "ctcvr_label"):
        if getattr(cfg, key) not in labels:
            raise ValueError(f"model.params.{key}={getattr(cfg, key)!r} is not a label of dataset {spec.dataset!r} "
                             f"(labels {labels})")
    if len(labels) != 2:
        raise ValueError(f"ESMM predicts exactly two labels ({cfg.ctr_label!r}, {cfg.ctcvr_label!r}) but dataset "
                         f"{spec.dataset!r} has labels {labels}: select those two with data.labels")
    return cfg.ctr_label, cfg.ctcvr_label


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate on both sides of -log 2 (Maechler 2012). Near 0 it needs
    ``-expm1(x)`` without cancellation; written as ``-2t / (1 - t)`` with ``t = tanh(x / 2)`` (the same value, as
    accurate: ``t`` carries the small ``x`` to full relative precision and ``1 - t`` is in (1, 4/3)), because ONNX
    has no expm1 (the exporter refuses ``aten::expm1``). Below -log 2, ``1 - exp(x)`` is in [1/2, 1): no
    cancellation."""
    t = torch.tanh(0.5 * x.clamp(min=-0.6931471805599453))
    near = torch.log(-2.0 * t) - torch.log(1.0 - t)
    far = torch.log(1.0 - torch.exp(x.clamp(max=-0.6931471805599453)))
    return torch.where(x > -0.6931471805599453, near, far)


def product_logit(a: Tensor, b: Tensor) -> Tensor:
    """``logit(sigmoid(a) * sigmoid(b))`` computed in log space: ``log p - log(1 - p)`` with ``log p =
    logsigmoid(a) + logsigmoid(b)`` (clamped below 0 so that a product of two saturated ones stays finite)."""
    log_p = (F.logsigmoid(a) + F.logsigmoid(b)).clamp(max=-1e-7)
    return log_p - _log1mexp(log_p)


@register("esmm", ESMMConfig)
class ESMM(nn.Module):
    multi_task = True  # logits [B, T], one column per label of the spec (tests and export read this)

    def __init__(self, spec: FeatureSpec, cfg: ESMMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ctr, ctcvr = esmm_labels(spec, cfg)
        self.tasks = tuple(spec.labels)
        self.ctr_index, self.ctcvr_index = self.tasks.index(ctr), self.tasks.index(ctcvr)
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.ctr_tower, self.cvr_tower = towers(2, self.embedding.output_dim, cfg)

    def _towers(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        e = self.embedding.flat(batch)
        return self.ctr_tower(e).squeeze(-1), self.cvr_tower(e).squeeze(-1)

    def cvr_logits(self, batch: dict[str, Tensor]) -> Tensor:
        """pCVR's logits [B] (the post-click conversion rate, defined on every impression)."""
        return self._towers(batch)[1]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        ctr, cvr = self._towers(batch)
        ctcvr = product_logit(ctr, cvr)
        cols = (ctr, ctcvr) if self.ctr_index == 0 else (ctcvr, ctr)
        return torch.stack(cols, dim=1)

    def training_loss(self, outputs: Tensor, labels: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The paper's loss over all impressions: ``l(pCTR, y_ctr) + l(pCTCVR, y_ctcvr)`` (``l`` = train.loss);
        no term on pCVR."""
        i, j = self.ctr_index, self.ctcvr_index
        return loss_fn(outputs[:, i], labels[:, i]) + loss_fn(outputs[:, j], labels[:, j])
