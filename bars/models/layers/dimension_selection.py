"""DNIS's soft selection layer (Cheng, Shen, Huang, "Differentiable Neural Input Search for Recommender Systems",
arXiv 2006.04466; no public code): one weight ``alpha[f, j]`` per (categorical field ``f``, embedding dimension
``j``) that scales dimension ``j`` of every embedding of field ``f``, applied to every field embedding a model
computes, without editing the model.

- soft (search): the embedding ``e`` of a value of field ``f`` becomes ``e * alpha[f]`` (element-wise over the
  ``d`` dimensions). ``alpha`` starts at ``init`` (1: the search starts from the plain model).
- hard (retrain): ``e * keep[f]`` with ``keep`` a 0/1 buffer [F, d] from :func:`prune_mask`. A dimension masked
  to 0 contributes nothing anywhere in the model and its table column receives no data gradient, so for the
  model's math a masked table of width ``d`` is the smaller table of the kept columns (zero-padded to ``d``);
  only its storage differs, which is what "embedding parameters kept" counts.
- ``grad_on``: the training forward uses ``alpha`` detached (the backbone's step does not move it); the search
  switches it on for its own step on a validation batch (bars/methods/dnis.py).

What it selects over: the ``d``-wide tables of the categorical fields (``vocab_size - 1`` rows per field, padding
excluded), so "embedding parameters" = ``sum_f (vocab_f - 1) * d``. Numeric, pretrained and sequence fields and
embeddings of another width (the first-order LR term's dim-1 tables) pass unchanged.

:meth:`DimensionSelection.attach` hooks every :class:`FeatureEmbedding` of width ``d`` the same way OptFS's
:class:`bars.models.layers.FeatureGate` does (the instance's ``forward`` replaced, so models calling
``embedding.flat(batch)`` are covered).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models.layers.embedding import FeatureEmbedding
from bars.models.layers.feature_gate import _Patched, patch_embeddings

__all__ = ["DimensionSelection", "prune_mask"]


class DimensionSelection(nn.Module):
    """``weight`` (alpha) ``[F, dim]`` over the categorical fields of ``spec``; ``keep`` (buffer, 0/1) once hard."""

    def __init__(self, spec: FeatureSpec, dim: int, init: float = 1.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"DimensionSelection: dim must be >= 1, got {dim}")
        if not math.isfinite(init):
            raise ValueError(f"DimensionSelection: init must be finite, got {init!r}")
        self.dim = int(dim)
        self.init_value = float(init)
        self.field_names = tuple(f.name for f in spec.features if f.type == "categorical")
        if not self.field_names:
            raise ValueError("DimensionSelection: the dataset has no categorical field to select dimensions of")
        self.index = {n: i for i, n in enumerate(self.field_names)}
        self.register_buffer("rows", torch.tensor([spec[n].vocab_size - 1 for n in self.field_names],
                                                  dtype=torch.int64), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(self.field_names), self.dim))
        self.register_buffer("keep", torch.ones(len(self.field_names), self.dim))
        self.hard = False
        self.grad_on = False
        self.reset_parameters()

    @property
    def parameters_total(self) -> int:
        """Embedding parameters selected over: ``sum_f (vocab_f - 1) * dim``."""
        return int(self.rows.sum()) * self.dim

    def parameters_kept(self, keep: Tensor | None = None) -> int:
        """``sum_f (vocab_f - 1) * (dims kept of f)`` under ``keep`` (default: the layer's own mask)."""
        k = (self.keep if keep is None else keep).bool()
        return int((k.sum(dim=1) * self.rows).sum())

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(self.init_value)

    def selection(self) -> Tensor:
        """``[F, dim]``: ``keep`` when hard, else ``alpha`` (detached unless ``grad_on``)."""
        if self.hard:
            return self.keep
        return self.weight if self.grad_on else self.weight.detach()

    def l1(self) -> Tensor:
        """``sum |alpha|`` (the sparsity term of the search)."""
        return self.weight.abs().sum()

    def set_mask(self, keep: Tensor) -> None:
        """Make the layer hard with the 0/1 (or bool) mask ``keep`` [F, dim]; ``alpha`` no longer trains."""
        if tuple(keep.shape) != tuple(self.weight.shape):
            raise ValueError(f"DimensionSelection: mask shape {tuple(keep.shape)} != {tuple(self.weight.shape)}")
        with torch.no_grad():
            self.keep.copy_(keep.to(self.keep.dtype))
        self.weight.requires_grad_(False)
        self.hard = True

    def dims_per_field(self) -> dict[str, int]:
        """The mixed dimensions: dims kept per field under the mask."""
        k = self.keep.bool().sum(dim=1)
        return {n: int(k[i]) for i, n in enumerate(self.field_names)}

    def attach(self, model: nn.Module) -> list[_Patched]:
        """Scale the output of every :class:`FeatureEmbedding` of width ``dim`` in ``model``; returns handles
        whose ``remove()`` restores it. Raises when no embedding of that width serves a categorical field."""
        handles = patch_embeddings(model, self._hook_for, width=self.dim)
        if not handles:
            raise ValueError(f"DimensionSelection: {type(model).__name__} has no FeatureEmbedding of width {self.dim} "
                             "over a categorical field; DNIS selects dimensions of the shared embedding layer")
        return handles

    def _hook_for(self, emb: FeatureEmbedding) -> Callable[..., Tensor] | None:
        names = [n for n in emb.field_names if n in self.index and n in emb.cat_names]
        if not names:
            return None
        positions = torch.tensor([emb.field_names.index(n) for n in names], dtype=torch.int64)
        rows = torch.tensor([self.index[n] for n in names], dtype=torch.int64)
        everything = [emb.field_names.index(n) for n in names] == list(range(emb.num_fields))
        cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

        def hook(batch: dict[str, Tensor], out: Tensor) -> Tensor:
            dev = out.device
            if dev not in cache:
                cache[dev] = (rows.to(dev), positions.to(dev))
            r, p = cache[dev]
            sel = self.selection().to(out.dtype).index_select(0, r)  # [Fs, d]
            if everything:
                return out * sel
            full = torch.ones(out.shape[1], out.shape[2], dtype=out.dtype, device=dev).index_copy(0, p, sel)
            return out * full

        return hook


def prune_mask(alpha: Tensor, rows: Tensor, *, keep_ratio: float | None = None,
               threshold: float | None = None, min_dims: int = 0, scope: str = "global") -> Tensor:
    """DNIS's pruning: keep the (field, dim) entries whose ``|alpha|`` is above a threshold. Bool ``[F, d]``.

    - ``threshold``: keep ``|alpha| > threshold``.
    - ``keep_ratio``: the threshold is the smallest ``t`` among the values of ``|alpha|`` such that keeping
      ``|alpha| >= t`` keeps at most ``keep_ratio`` of the embedding parameters (entry ``(f, j)`` weighs
      ``rows[f]``, the field's vocabulary); ties at ``t`` are kept or dropped together. The fraction kept is the
      largest reachable one not above ``keep_ratio`` (one more value of ``|alpha|`` would exceed it).
    - ``min_dims`` (a bars switch, 0 = the paper): each field first keeps its ``min_dims`` largest ``|alpha|``
      whatever the threshold; with ``keep_ratio`` their parameters count against the budget (when they alone
      exceed it, only they are kept and the fraction is above ``keep_ratio``).
    - ``scope`` (a bars switch; ``"global"`` = the paper: one threshold over every (field, dim) entry), with
      ``keep_ratio`` only: ``"per_row"`` ranks entries by ``|alpha[f, j]| / rows[f]``, the selection weight per
      embedding parameter the entry costs, instead of ``|alpha|`` (within a field the order is the same; across
      fields a dimension of a small field costs few parameters and comes first; the budget rule is the same);
      ``"per_field"`` keeps in every field its ``floor(keep_ratio * d)`` largest ``|alpha|`` (then the floors, if
      more), so every field keeps the same share of its dimensions and ``alpha`` only chooses which.
    Exactly one of ``keep_ratio`` and ``threshold`` must be given."""
    if (keep_ratio is None) == (threshold is None):
        raise ValueError("prune_mask: give exactly one of keep_ratio and threshold")
    if min_dims < 0:
        raise ValueError(f"prune_mask: min_dims must be >= 0, got {min_dims!r}")
    a = alpha.detach().abs().float()
    if scope not in ("global", "per_row", "per_field"):
        raise ValueError(f"prune_mask: scope must be global, per_row or per_field, got {scope!r}")
    if scope != "global" and keep_ratio is None:
        raise ValueError(f"prune_mask: scope={scope} ranks against a keep_ratio budget: give keep_ratio")
    if scope == "per_row":
        a = a.double() / rows.to(torch.float64).clamp(min=1).unsqueeze(1)
    if scope == "per_field":
        if not 0.0 < float(keep_ratio) <= 1.0:
            raise ValueError(f"prune_mask: keep_ratio must be in (0, 1], got {keep_ratio!r}")
        k = max(math.floor(float(keep_ratio) * a.shape[1] + 1e-9), int(min_dims))
        keep = torch.zeros_like(a, dtype=torch.bool)
        if k > 0:
            keep.scatter_(1, a.topk(min(k, a.shape[1]), dim=1).indices, True)
        return keep
    floor = torch.zeros_like(a, dtype=torch.bool)
    if min_dims > 0:
        floor.scatter_(1, a.topk(min(int(min_dims), a.shape[1]), dim=1).indices, True)
    if threshold is not None:
        return (a > float(threshold)) | floor
    if not 0.0 < float(keep_ratio) <= 1.0:
        raise ValueError(f"prune_mask: keep_ratio must be in (0, 1], got {keep_ratio!r}")
    cost = rows.to(torch.float64).unsqueeze(1).expand_as(a)  # [F, d]: parameters of one dim of field f
    budget = float(keep_ratio) * float(cost.sum()) * (1 + 1e-12) - float(cost[floor].sum())
    free = ~floor
    if budget < 0 or not bool(free.any()):
        return floor
    values, inverse = torch.unique(a[free], sorted=True, return_inverse=True)  # ascending
    per_value = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, cost[free])
    kept_if = per_value.flip(0).cumsum(0).flip(0)  # kept_if[i]: parameters with |alpha| >= values[i] (not floor)
    ok = (kept_if <= budget).nonzero().flatten()
    if len(ok) == 0:
        return floor
    return floor | (free & (a >= values[int(ok[0])]))
