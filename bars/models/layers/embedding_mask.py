"""OptEmbed's embedding mask (Lyu et al., "OptEmbed: Learning Optimal Embedding Table for Click-through Rate
Prediction", CIKM 2022; official code https://github.com/fuyuanlyu/OptEmbed, commit 0feda5f8): which embedding
rows a model keeps (a learnable threshold per field on the rows' norms) and how many leading dimensions each
field keeps (a dimension mask), applied to every field embedding a model computes, without editing the model.

Two modes (``mode``):

- ``"supernet"`` (the official ``mode_supernet='all'``, ``mode_threshold='field'``, ``mode_oov='zero'``,
  ``models/modules_super.py: BasicSuper.calculate_input``): the embedding ``e`` of a value of field ``f`` becomes
  ``m_row * m_dim * e`` with ``m_row = BinaryStep(||e||_p - t_f)`` (``p``: ``norm``, official 1; ``t_f`` the
  field's learnable threshold, initialised to 0; ``level='feature'``: one per feature value, the official
  ``mode_threshold='feature'``) and, in training mode only, ``m_dim`` the first ``k + 1`` of
  ``d`` dimensions with ``k`` drawn uniformly in ``[0, d)`` per row of the batch and field (so every dimension
  choice trains); in eval mode ``m_dim = 1``. ``BinaryStep`` (``models/layer.py``) is ``1[u > 0]`` forward and,
  backward, the gradient times ``2 - 4|u|`` for ``|u| <= 0.4``, ``0.4`` for ``0.4 < |u| <= 1`` and ``0`` beyond
  (a straight-through surrogate): the thresholds and the embedding norms both receive it. The threshold
  regulariser is ``sum_f exp(-t_f)`` (``supernet.py: SuperNet.__update``).
- ``"fixed"`` (evolution candidates and the retrain: ``modules_evo.py``, ``modules_retrain.py`` with
  ``mode_retrain='weight'``): ``e * row_keep[value] * prefix(dims_f)``, a frozen 0/1 mask per embedding row and
  the first ``dims_f`` dimensions of field ``f``. A masked row or dimension contributes nothing anywhere in the
  model and receives no data gradient, so for the model's math this is the pruned, mixed-dimension table.

What it masks: the ``d``-wide tables of the categorical fields (rows ``1..vocab_f - 1`` of each field, the
padding row excluded), as :class:`bars.models.layers.DimensionSelection` does: "embedding rows" = ``sum_f
(vocab_f - 1)``, "embedding parameters" = ``sum_f rows_kept_f * dims_f`` (the official ``calc_sparsity``). Numeric,
pretrained and sequence fields and embeddings of another width (the first-order LR term's dim-1 tables, which the
official models do not mask either) pass unchanged. Row indices are global, laid out as
:class:`bars.models.layers.FeatureGate`'s (row 0 padding; value ``i >= 1`` of field ``f`` at ``offset_f + i - 1``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models.layers.embedding import FeatureEmbedding
from bars.models.layers.feature_gate import _Patched, patch_embeddings

__all__ = ["BinaryStep", "EmbeddingMask", "binary_step", "prefix_mask"]


class BinaryStep(torch.autograd.Function):
    """``1[u > 0]`` with OptEmbed's surrogate gradient ``g(u) = 2 - 4|u|`` (``|u| <= 0.4``), ``0.4``
    (``0.4 < |u| <= 1``), ``0`` (``|u| > 1``)."""

    @staticmethod
    def forward(ctx, u: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (u,) = ctx.saved_tensors
        a = u.abs()
        g = torch.where(a > 1, torch.zeros_like(u), torch.where(a > 0.4, torch.full_like(u, 0.4), 2 - 4 * a))
        return grad * g


def binary_step(u: Tensor) -> Tensor:
    return BinaryStep.apply(u)


def prefix_mask(dims: Tensor, width: int) -> Tensor:
    """``[..., width]`` float: 1 on the first ``dims`` dimensions (``dims`` any shape of ints in ``[0, width]``)."""
    return (torch.arange(width, device=dims.device) < dims.unsqueeze(-1)).float()


class EmbeddingMask(nn.Module):
    """Thresholds ``threshold`` (learnable, supernet: ``[F]`` per field, or ``[1 + sum(vocab - 1)]`` per feature
    value with ``level='feature'``, the official ``mode_threshold``) and the frozen masks
    ``row_keep [1 + sum(vocab - 1)]`` and ``dims [F]`` (fixed mode) over the categorical fields of ``spec`` at
    embedding width ``dim``."""

    def __init__(self, spec: FeatureSpec, dim: int, norm: int = 1, threshold_init: float = 0.0,
                 level: str = "field", blocks: int = 1) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"EmbeddingMask: dim must be >= 1, got {dim}")
        if norm not in (1, 2):
            raise ValueError(f"EmbeddingMask: norm must be 1 or 2, got {norm!r}")
        if level not in ("field", "feature"):
            raise ValueError(f"EmbeddingMask: level must be 'field' or 'feature', got {level!r}")
        if not (isinstance(blocks, int) and blocks >= 1):
            raise ValueError(f"EmbeddingMask: blocks must be an int >= 1, got {blocks!r}")
        self.dim, self.norm, self.threshold_init, self.level = int(dim), int(norm), float(threshold_init), level
        self.field_names = tuple(f.name for f in spec.features if f.type == "categorical")
        # the units a dimension is chosen for: the fields (the paper), or ``blocks`` units per field (a bars switch:
        # OptEmbed's frequency_blocks; field f's rows go to units f * blocks .. f * blocks + blocks - 1 by set_units)
        self.blocks = int(blocks)
        self.unit_names = self.field_names if blocks == 1 else tuple(
            f"{n}_b{k}" for n in self.field_names for k in range(blocks))
        if not self.field_names:
            raise ValueError("EmbeddingMask: the dataset has no categorical field to mask")
        self.index = {n: i for i, n in enumerate(self.field_names)}
        self.offsets: dict[str, int] = {}
        rows = 1
        for name in self.field_names:
            self.offsets[name] = rows
            rows += spec[name].vocab_size - 1
        self.register_buffer("rows", torch.tensor([spec[n].vocab_size - 1 for n in self.field_names],
                                                  dtype=torch.int64), persistent=False)
        self.threshold = nn.Parameter(torch.empty(len(self.field_names) if level == "field" else rows))
        self.register_buffer("row_keep", torch.ones(rows))
        self.register_buffer("dims", torch.full((len(self.unit_names),), self.dim, dtype=torch.int64))
        if blocks > 1:  # each row's unit (persistent: a retrained model's checkpoint carries it)
            unit = torch.zeros(rows, dtype=torch.int64)
            for i, name in enumerate(self.field_names):
                unit[self.offsets[name]: self.offsets[name] + int(self.rows[i])] = i * blocks
            self.register_buffer("row_unit", unit)
        self.row_allow: Tensor | None = None  # bars switch (set_row_allow): rows forced off in supernet mode too
        self.mode = "supernet"
        self.owners: dict[str, FeatureEmbedding] = {}  # the first hooked embedding of each field
        self.reset_parameters()

    # ------------------------------------------------------------------------------------------- counting
    @property
    def rows_total(self) -> int:
        return int(self.rows.sum())

    @property
    def parameters_total(self) -> int:
        return self.rows_total * self.dim

    def rows_kept_per_field(self, row_keep: Tensor | None = None) -> Tensor:
        """``[F]`` int: rows kept per field (padding excluded)."""
        k = (self.row_keep if row_keep is None else row_keep).detach().cpu() > 0
        return torch.stack([k[self.offsets[n]: self.offsets[n] + int(self.rows[i])].sum()
                            for i, n in enumerate(self.field_names)])

    def rows_kept_per_unit(self, row_keep: Tensor | None = None) -> Tensor:
        """``[U]`` int: rows kept per unit (the fields, or their frequency blocks)."""
        if self.blocks == 1:
            return self.rows_kept_per_field(row_keep)
        k = ((self.row_keep if row_keep is None else row_keep).detach().cpu() > 0)[1:].long()
        return torch.bincount(self.row_unit[1:].cpu(), weights=k.double(), minlength=len(self.unit_names)).long()

    def parameters_kept(self, row_keep: Tensor | None = None, dims: Tensor | None = None) -> int:
        """``sum_u rows_kept_u * dims_u`` over the units (the fields: the official ``calc_sparsity``)."""
        d = (self.dims if dims is None else dims).detach().cpu().long()
        return int((self.rows_kept_per_unit(row_keep) * d).sum())

    def set_units(self, row_unit: Tensor) -> None:
        """The unit of every global row (``blocks > 1``): field ``f``'s rows must map into ``f * blocks ..
        f * blocks + blocks - 1``."""
        if self.blocks == 1:
            raise ValueError("EmbeddingMask: set_units needs blocks > 1 (one unit per field otherwise)")
        u = torch.as_tensor(row_unit, dtype=torch.int64).cpu()
        if tuple(u.shape) != tuple(self.row_unit.shape):
            raise ValueError(f"EmbeddingMask: row unit shape {tuple(u.shape)} != {tuple(self.row_unit.shape)}")
        for i, name in enumerate(self.field_names):
            part = u[self.offsets[name]: self.offsets[name] + int(self.rows[i])]
            if bool(((part < i * self.blocks) | (part >= (i + 1) * self.blocks)).any()):
                raise ValueError(f"EmbeddingMask: rows of field {name!r} must map to units "
                                 f"{i * self.blocks}..{(i + 1) * self.blocks - 1}")
        self.row_unit.copy_(u.to(self.row_unit.device))

    # --------------------------------------------------------------------------------------------- state
    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.threshold.fill_(self.threshold_init)

    def penalty(self) -> Tensor:
        """The threshold regulariser ``sum exp(-t)`` over every threshold (per feature: the padding row's excluded)."""
        t = self.threshold if self.level == "field" else self.threshold[1:]
        return torch.exp(-t).sum()

    def set_fixed(self, row_keep: Tensor, dims: Tensor) -> None:
        """Freeze: rows ``row_keep`` (0/1 per global row) and the first ``dims[f]`` dimensions of field ``f``."""
        if tuple(row_keep.shape) != tuple(self.row_keep.shape):
            raise ValueError(f"EmbeddingMask: row mask shape {tuple(row_keep.shape)} != {tuple(self.row_keep.shape)}")
        self.set_dims(dims)
        with torch.no_grad():
            self.row_keep.copy_((row_keep > 0).to(self.row_keep.dtype))
        self.threshold.requires_grad_(False)
        self.mode = "fixed"

    def set_dims(self, dims: Tensor | list[int]) -> None:
        d = torch.as_tensor(dims, dtype=torch.int64)
        if tuple(d.shape) != tuple(self.dims.shape) or bool(((d < 0) | (d > self.dim)).any()):
            raise ValueError(f"EmbeddingMask: dims must be {len(self.unit_names)} ints in [0, {self.dim}], got {d.tolist()}")
        self.dims.copy_(d.to(self.dims.device))

    def set_row_allow(self, allow: Tensor | None) -> None:
        """A bars switch, not the paper (OptEmbed's ``method.min_row_count``): ``allow`` (0/1 per global row, the
        padding row 1) forces the rows at 0 off in supernet mode (their embedding is zero whatever the threshold)
        and in :meth:`hard_row_mask`. None (the default) leaves the paper's masks unchanged."""
        if allow is not None and tuple(allow.shape) != tuple(self.row_keep.shape):
            raise ValueError(f"EmbeddingMask: row allowance shape {tuple(allow.shape)} != {tuple(self.row_keep.shape)}")
        self.row_allow = None if allow is None else (allow > 0).to(self.row_keep.dtype).to(self.row_keep.device)

    @torch.no_grad()
    def hard_row_mask(self) -> Tensor:
        """``[1 + sum(vocab - 1)]`` 0/1: ``1[||E_row||_p > t_f]`` over each field's rows in its (first hooked)
        table (the official ``calc_feature_mask``); the padding row 1. With a row allowance
        (:meth:`set_row_allow`) the rows it forces off are 0 too."""
        keep = torch.ones_like(self.row_keep)
        for i, name in enumerate(self.field_names):
            emb = self.owners.get(name)
            if emb is None:
                continue
            table = emb.table(name)  # [vocab - 1, d]
            norms = table.detach().norm(p=self.norm, dim=1)
            o = self.offsets[name]
            t = self.threshold[i] if self.level == "field" else self.threshold[o: o + table.shape[0]]
            keep[o: o + table.shape[0]] = (norms - t.detach().to(norms.dtype) > 0).to(keep.dtype)
        if self.row_allow is not None:
            keep = keep * self.row_allow.to(keep.device)
        return keep

    # --------------------------------------------------------------------------------------------- hooks
    def attach(self, model: nn.Module) -> list[_Patched]:
        """Mask the output of every :class:`FeatureEmbedding` of width ``dim`` in ``model``; returns handles whose
        ``remove()`` restores it. Raises when no embedding of that width serves a categorical field."""
        handles = patch_embeddings(model, self._hook_for, width=self.dim)
        if not handles:
            raise ValueError(f"EmbeddingMask: {type(model).__name__} has no FeatureEmbedding of width {self.dim} "
                             "over a categorical field; OptEmbed masks the shared embedding layer")
        return handles

    def _hook_for(self, emb: FeatureEmbedding) -> Callable[..., Tensor] | None:
        names = [n for n in emb.field_names if n in self.index and n in emb.cat_names]
        if not names:
            return None
        for n in names:
            self.owners.setdefault(n, emb)
        positions = torch.tensor([emb.field_names.index(n) for n in names], dtype=torch.int64)
        fidx = torch.tensor([self.index[n] for n in names], dtype=torch.int64)
        offsets = torch.tensor([self.offsets[n] - 1 for n in names], dtype=torch.int64)
        everything = [emb.field_names.index(n) for n in names] == list(range(emb.num_fields))
        cache: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

        def hook(batch: dict[str, Tensor], out: Tensor) -> Tensor:
            dev = out.device
            if dev not in cache:
                cache[dev] = (positions.to(dev), fidx.to(dev), offsets.to(dev))
            p, fi, off = cache[dev]
            x = out if everything else out.index_select(1, p)  # [B, Fm, d]
            if self.mode == "supernet":
                if self.level == "field":
                    t = self.threshold.index_select(0, fi)  # [Fm]
                else:
                    idx = torch.stack([batch[n] for n in names], dim=1).long()
                    t = self.threshold[torch.where(idx > 0, idx + off, 0)]  # [B, Fm]
                u = x.norm(p=self.norm, dim=2) - t.to(x.dtype)  # [B, Fm]
                m = binary_step(u).unsqueeze(-1)
                if self.row_allow is not None:  # bars switch: rows forced off (OptEmbed's min_row_count)
                    idx = torch.stack([batch[n] for n in names], dim=1).long()
                    ra = self.row_allow.to(dev, x.dtype)[torch.where(idx > 0, idx + off, 0)]
                    m = m * ra.unsqueeze(-1)
                if self.training:
                    k = torch.randint(0, self.dim, u.shape, device=dev)
                    m = m * prefix_mask(k + 1, self.dim).to(x.dtype)
            else:
                idx = torch.stack([batch[n] for n in names], dim=1).long()  # [B, Fm]
                g = torch.where(idx > 0, idx + off, 0)
                rk = self.row_keep.to(x.dtype)[g].unsqueeze(-1)
                if self.blocks == 1:
                    m = rk * prefix_mask(self.dims.index_select(0, fi), self.dim).to(x.dtype)
                else:  # bars switch (frequency blocks): each row's dimension count is its unit's
                    m = rk * prefix_mask(self.dims[self.row_unit[g]], self.dim).to(x.dtype)
            if everything:
                return x * m
            full = torch.ones(out.shape[0], out.shape[1], out.shape[2], dtype=out.dtype, device=dev)
            return out * full.index_copy(1, p, m.expand(-1, -1, out.shape[2]))

        return hook
