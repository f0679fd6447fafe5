"""Field embeddings (every embedding table of a model lives in a FeatureEmbedding) and the first-order LR term."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import Feature, FeatureSpec
from bars.models.layers.kernels import lookup_grad, traced
from bars.models.layers.table_grad import SparseTableGrad, usable


# ------------------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------------------
class RegularizedTable:
    """A table whose embedding regularizer's gradient ``lam * W`` the lookup's backward may write into the table's
    gradient (:func:`regularizer_in_lookup_grad`); ``lookups`` counts this step's differentiable lookups and
    ``done`` says whether the gradient holds ``lam * W``."""

    __slots__ = ("done", "lam", "lookups", "slots", "sparse")

    def __init__(self, lam: float, slots: Tensor | None = None) -> None:
        self.lam, self.lookups, self.done = float(lam), 0, False
        self.slots = slots  # a row -> slot map (table_grad.new_slots): the gradient may be held sparse
        self.sparse: SparseTableGrad | None = None  # the gradient, held sparse (weight.grad left None)


class _Active(threading.local):
    tables: dict[int, RegularizedTable] | None = None  # id(table) -> its entry, inside regularizer_in_lookup_grad


_ACTIVE = _Active()  # per thread: a CPU backward runs in the thread that called it


@contextlib.contextmanager
def regularizer_in_lookup_grad(tables: Sequence[Tensor], lam: float,
                               slots: dict[int, Tensor] | None = None) -> Iterator[dict[int, RegularizedTable]]:
    """For one training step (its forward and backward inside the block): a CPU float32 table of ``tables``
    (width 16 or more) looked up exactly once by :func:`padded_lookup` gets its regularizer's gradient ``lam * W``
    from that lookup's backward, in the unfused step's order of additions (:func:`bars.models.layers.kernels.
    lookup_grad`), instead of a zero-filled gradient to which the trainer then adds ``lam * W`` in two more passes
    over the table (issue 16: ~3 ms of a Criteo-shape step's ~16 ms for the table). Yields ``{id(table): entry}``; after the backward the
    caller adds ``lam * W`` itself to every table whose entry is not ``done`` (looked up twice or more, width
    below 16, not looked up, or another dtype or device), so the gradient always holds it exactly once. ``slots``
    (``{id(table): row -> slot map}``, kept by the caller from step to step): a table that has one (of any width)
    and is looked up exactly once gets its gradient as ``entry.sparse`` instead (``weight.grad`` stays None), which
    the caller must use or materialise (:mod:`bars.models.layers.table_grad`)."""
    if _ACTIVE.tables is not None:
        raise RuntimeError("regularizer_in_lookup_grad: already active in this thread (one training step at a time)")
    slots = slots or {}
    entries = {id(t): RegularizedTable(lam, slots.get(id(t))) for t in tables}
    _ACTIVE.tables = entries
    try:
        yield entries
    finally:
        _ACTIVE.tables = None


class _PaddedLookup(torch.autograd.Function):
    """``F.embedding(idx, weight, padding_idx=0)`` on CPU float32 with a cheaper backward: torch's
    ``embedding_dense_backward`` adds each looked-up row's gradient in its own small call (about 2 ms for Frappe's
    4096 x 10 lookups into a 5,390 x 10 table, 1.8 ms even at width 1). Here one ``bincount`` over (row, column)
    keys (width < 16) or one ``index_add_`` (wider) does the same additions in the same order (each row's
    gradients in the order of their lookups), so the gradient is bit for bit torch's (tests/test_layers.py);
    the padding row's gradient is zero. ``table`` (:func:`regularizer_in_lookup_grad`): the gradient with the
    regularizer's ``lam * W`` in it, held sparse where the table has a slot map (any width; the rows not looked up
    then hold ``W * lam`` where the unfused step has ``0 + W * lam``: a difference in a zero's sign, which changes no
    clipping norm and no Adam update), else written dense (width 16 or more)."""

    @staticmethod
    def forward(ctx, idx: Tensor, weight: Tensor, table: RegularizedTable | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.rows = weight.shape[0]
        ctx.table = table
        ctx.weight = weight if table is not None else None
        return F.embedding(idx, weight, padding_idx=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        rows, dim = ctx.rows, grad.shape[-1]
        flat = idx.reshape(-1).long()
        g = grad.reshape(-1, dim)
        table = ctx.table
        if table is not None and table.lookups == 1 and not table.done and grad.dtype == torch.float32:
            if table.slots is not None and usable(ctx.weight):  # any width
                table.done = True
                table.sparse = SparseTableGrad(ctx.weight, flat, g, table.lam, table.slots, lam_last=dim < 16)
                return None, None, None
            if dim >= 16:
                table.done = True
                return None, lookup_grad(flat, g, ctx.weight, table.lam), None
        if dim < 16:
            keys = (flat.unsqueeze(1) * dim + torch.arange(dim, device=flat.device)).reshape(-1)
            out = torch.bincount(keys, weights=g.reshape(-1), minlength=rows * dim).view(rows, dim)
        else:
            out = torch.zeros((rows, dim), dtype=grad.dtype, device=grad.device).index_add_(0, flat, g)
        out[0] = 0
        return None, out, None


def padded_lookup(idx: Tensor, weight: Tensor) -> Tensor:
    """``F.embedding(idx, weight, padding_idx=0)``: the same values and gradients, the gradient cheaper on CPU
    (:class:`_PaddedLookup`; inside :func:`regularizer_in_lookup_grad` with the regularizer's in it)."""
    if (weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.requires_grad
            and torch.is_grad_enabled() and not traced()):
        active = _ACTIVE.tables
        table = active.get(id(weight)) if active else None
        if table is not None:
            table.lookups += 1
            if weight.shape[1] < 16 and table.slots is None:
                table = None
        return _PaddedLookup.apply(idx, weight, table)  # (an exported graph keeps torch's own op)
    return F.embedding(idx, weight, padding_idx=0)


class FeatureEmbedding(nn.Module):
    """Embeds every field of ``spec`` (or the subset ``fields``, in spec order) into ``[B, F, dim]``.

    - categorical: one lookup. All tables (categorical and sequence fields) are packed into ONE parameter
      ``weight`` of shape ``[1 + sum(vocab_size - 1), dim]``: row 0 is the shared padding row (always zero, its
      gradient is masked by ``padding_idx``), field ``f``'s index ``i >= 1`` lives at row ``offset_f + i - 1``.
      One gather for all categorical fields keeps per-batch Python overhead to a handful of ops. The squared
      norm of the packed table equals the sum over the per-field tables, so regularising "whole tables" is
      unchanged; :meth:`table` returns a field's own rows for inspection.
    - numeric: ``value * v_f`` with a learned vector ``v_f`` per field (``numeric_weight [F_num, dim]``), as
      FuxiCTR's ``Linear(1, dim)`` without bias; initialised xavier-normal like that Linear (see init_bars_).
    - sequence: masked mean (``sequence_pooling="sum"``: masked sum) over the non-zero indices of ``[B, L]``, on
      either padding side; a sequence with no non-zero index gives the zero vector.
    - ``Feature.share_embedding`` (``use_sharing``): the field reads the rows of the named field's table (its
      vocab_size must not exceed the owner's). Without sharing every field gets a table of its own (FuxiCTR's
      first-order LR term does that).
    - ``Feature.pretrained`` (``use_pretrained``): the owner's table is a separate parameter
      ``pretrained[<owner>]`` of ``[vocab_size, dim]`` whose rows listed in ``spec.tables`` (filled by the loader)
      hold the file's vectors; rows not in the file are zero when the table is frozen
      (``Feature.freeze_pretrained``, FuxiCTR 2.0's ``freeze_emb``; the parameter then has ``requires_grad``
      false, so no optimiser or regulariser touches it) and initialised like any embedding row otherwise. Without
      ``use_pretrained`` the field is an ordinary table. The vectors' width must equal ``dim``.
    - sequence models: :meth:`lookup` embeds raw indices of any field in its (owner's) table and
      :meth:`sequence` returns a sequence's unpooled ``[B, L, dim]`` embeddings with its mask (``indices > 0``).
      Sequence fields named in ``unpooled`` (e.g. DIN's behaviour histories, which the model pools itself) keep
      their tables but are left out of :meth:`forward` (and of ``field_names`` / ``num_fields``).
    - indices must lie in ``[0, vocab_size)``; in the packed table a larger one would silently read a
      neighbouring field's rows, so on CPU an out-of-range index raises ``IndexError`` naming the field (one
      comparison per batch; skipped on accelerators to avoid a device sync).
    """

    def __init__(self, spec: FeatureSpec, dim: int, fields: Sequence[str] | None = None, *,
                 use_sharing: bool = True, use_pretrained: bool = True, sequence_pooling: str = "mean",
                 unpooled: Sequence[str] = ()) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"FeatureEmbedding: dim must be >= 1, got {dim}")
        if sequence_pooling not in ("mean", "sum"):
            raise ValueError(f"FeatureEmbedding: sequence_pooling must be 'mean' or 'sum', got {sequence_pooling!r}")
        names = list(spec.names) if fields is None else [n for n in spec.names if n in set(fields)]
        if fields is not None:
            missing = [n for n in fields if n not in spec.names]
            if missing:
                raise ValueError(
                    f"FeatureEmbedding: fields {missing} are not in spec; fields are {spec.names}"
                )
        if not names:
            raise ValueError("FeatureEmbedding: no fields to embed")
        bad = [n for n in unpooled if n not in names or spec[n].type != "sequence"]
        if bad:
            raise ValueError(f"FeatureEmbedding: unpooled fields {bad} are not sequence fields among {names}")
        self.dim = dim
        self.sequence_pooling = sequence_pooling
        self.unpooled: tuple[str, ...] = tuple(n for n in names if n in set(unpooled))
        self.field_names: tuple[str, ...] = tuple(n for n in names if n not in self.unpooled)
        feats = [spec[n] for n in names]

        # table owners: a field that shares another's table reads the owner's rows (owner may be outside `fields`)
        def owner(f: Feature) -> Feature:
            if not use_sharing:
                return f
            seen = {f.name}
            while f.share_embedding:
                f = spec[f.share_embedding]
                if f.name in seen:
                    raise ValueError(f"share_embedding cycle through {sorted(seen)}")
                seen.add(f.name)
            return f

        def is_pretrained(o: Feature) -> bool:
            return use_pretrained and bool(o.pretrained)

        offsets: dict[str, int] = {}
        pretrained: dict[str, Feature] = {}
        rows = 1  # row 0 = shared padding
        for f in feats:
            if f.type == "numeric":
                continue
            o = owner(f)
            if o.type == "numeric":
                raise ValueError(f"feature {f.name!r} shares the embedding of numeric field {o.name!r}")
            if f.vocab_size > o.vocab_size:
                raise ValueError(
                    f"feature {f.name!r} (vocab {f.vocab_size}) shares the table of {o.name!r} "
                    f"(vocab {o.vocab_size}), which is smaller"
                )
            if is_pretrained(o):
                pretrained[o.name] = o
            elif o.name not in offsets:
                offsets[o.name] = rows
                rows += o.vocab_size - 1
        self.table_rows: dict[str, tuple[int, int]] = {
            n: (offsets[n], offsets[n] + spec[n].vocab_size - 1) for n in offsets
        }
        self._owner = {f.name: owner(f).name for f in feats if f.type != "numeric"}
        self._vocab = {f.name: f.vocab_size for f in feats if f.type != "numeric"}
        self.cat_names = tuple(f.name for f in feats if f.type == "categorical" and self._owner[f.name] in offsets)
        self.pcat_names = tuple(f.name for f in feats if f.type == "categorical" and self._owner[f.name] in pretrained)
        self.num_names = tuple(f.name for f in feats if f.type == "numeric")
        self.seq_names = tuple(f.name for f in feats if f.type == "sequence" and f.name not in self.unpooled)
        self._offset = {n: offsets[o] for n, o in self._owner.items() if o in offsets}

        self.weight = nn.Parameter(torch.empty(rows, dim)) if rows > 1 else None
        # pretrained tables: one parameter per owner (frozen ones do not train), and the file's rows to reset them
        self.pretrained = nn.ParameterDict()
        self._pretrained_rows: dict[str, tuple[Tensor, Tensor]] = {}
        for name, o in pretrained.items():
            rows_ = spec.tables.get(name)
            if rows_ is None:
                raise ValueError(f"feature {name!r} declares the pretrained table {o.pretrained!r} but the spec carries "
                                 "no rows: load the dataset with bars.data.loader.load_dataset, which reads them")
            if o.pretrained_dim != dim:
                raise ValueError(f"feature {name!r}: pretrained vectors have width {o.pretrained_dim} but the "
                                 f"embedding dim is {dim}: set the embedding dim to {o.pretrained_dim} "
                                 "(protocol.embedding_dim), as BARS does")
            self.pretrained[name] = nn.Parameter(torch.empty(o.vocab_size, dim), requires_grad=not o.freeze_pretrained)
            self._pretrained_rows[name] = (torch.tensor(rows_.index, dtype=torch.int64),
                                           torch.tensor(rows_.vectors, dtype=torch.float32))
        # global row of index i of a categorical field = (i + offset - 1) if i > 0 else 0
        cat_off = [self._offset[n] - 1 for n in self.cat_names]
        self.register_buffer("cat_offsets", torch.tensor(cat_off, dtype=torch.int64), persistent=False)
        cat_vocab = [spec[n].vocab_size for n in self.cat_names]
        self.register_buffer("cat_vocab", torch.tensor(cat_vocab, dtype=torch.int64), persistent=False)
        self.numeric_weight = nn.Parameter(torch.empty(len(self.num_names), dim)) if self.num_names else None

        order = list(self.cat_names) + list(self.pcat_names) + list(self.num_names) + list(self.seq_names)
        perm = [order.index(n) for n in self.field_names]
        self._perm = None if perm == list(range(len(self.field_names))) else perm
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.int64), persistent=False)
        self.reset_parameters()

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @property
    def output_dim(self) -> int:
        """Width of :meth:`flat`: num_fields * dim."""
        return self.num_fields * self.dim

    def reset_parameters(self, std: float = 1e-4) -> None:
        """Embedding rows ~ N(0, std) with the padding row zero; numeric vectors xavier-normal (fan 1 x dim);
        pretrained tables: the file's rows, the others zero (frozen) or N(0, std) (trainable)."""
        with torch.no_grad():
            if self.weight is not None:
                self.weight.normal_(0.0, std)
                self.weight[0].zero_()
            if self.numeric_weight is not None:
                self.numeric_weight.normal_(0.0, math.sqrt(2.0 / (1 + self.dim)))
            for name, table in self.pretrained.items():
                if table.requires_grad:
                    table.normal_(0.0, std)
                else:
                    table.zero_()
                index, vectors = self._pretrained_rows[name]
                table[index.to(table.device)] = vectors.to(table.device, table.dtype)
                table[0].zero_()

    def table(self, name: str) -> Tensor:
        """The rows of field ``name``'s table (index i >= 1 at row i - 1; padding row 0 is implicit zero); a
        field with ``share_embedding`` gives its owner's rows."""
        own = self._owner.get(name, name)
        if own in self.pretrained:
            return self.pretrained[own][1:]
        lo, hi = self.table_rows[own]
        assert self.weight is not None
        return self.weight[lo:hi]

    def _lookup(self, idx: Tensor, offset: Tensor | int) -> Tensor:
        assert self.weight is not None
        g = torch.where(idx > 0, idx + offset, 0)
        return padded_lookup(g, self.weight)

    def lookup(self, name: str, idx: Tensor) -> Tensor:
        """Embeddings ``[..., dim]`` of raw indices ``idx`` (any shape) of field ``name`` in its table (its owner's
        when it shares one); index 0 gives the zero vector. E.g. DIN's target item and its history read one table:
        ``lookup("item_id", batch["item_id"])`` and ``lookup("item_history", batch["item_history"])``."""
        if name not in self._owner:
            raise KeyError(f"FeatureEmbedding: no table for field {name!r}; tables serve {sorted(self._owner)}")
        idx = idx.long()
        if idx.device.type == "cpu" and idx.numel() and bool((idx >= self._vocab[name]).any()):
            raise IndexError(f"field {name!r}: index {int(idx.max())} >= vocab_size {self._vocab[name]}")
        own = self._owner[name]
        if own in self.pretrained:
            return padded_lookup(idx, self.pretrained[own])
        return self._lookup(idx, self._offset[name] - 1)

    def sequence(self, batch: dict[str, Tensor], name: str) -> tuple[Tensor, Tensor]:
        """``(embeddings [B, L, dim], mask [B, L] bool)`` of sequence field ``name``; mask = index > 0 (padding
        may stand at either end, see ``Feature.padding``)."""
        seq = batch[name]
        return self.lookup(name, seq), seq > 0

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, F, dim]`` in spec order."""
        parts: list[Tensor] = []
        if self.cat_names:
            idx = torch.stack([batch[n] for n in self.cat_names], dim=1).long()  # [B, Fc]
            # one reduction (each field's largest index) then a comparison of Fc numbers, rather than two passes
            # over [B, Fc]: the check costs a shallow model's step less (issue 16)
            if idx.device.type == "cpu" and idx.numel() and bool((idx.amax(dim=0) >= self.cat_vocab).any()):
                self._out_of_range(idx, self.cat_vocab, self.cat_names)
            parts.append(self._lookup(idx, self.cat_offsets))
        for n in self.pcat_names:
            parts.append(self.lookup(n, batch[n]).unsqueeze(1))
        if self.num_names:
            vals = torch.stack([batch[n] for n in self.num_names], dim=1).float()  # [B, Fn]
            parts.append(vals.unsqueeze(-1) * self.numeric_weight)
        for n in self.seq_names:
            seq = batch[n].long()  # [B, L]
            emb = self.lookup(n, seq)  # [B, L, D]
            mask = (seq > 0).to(emb.dtype)  # explicit, so pooling never depends on the padding row's value
            pooled = torch.bmm(mask.unsqueeze(1), emb).squeeze(1)  # [B, D]: sum over non-padding positions
            if self.sequence_pooling == "mean":
                pooled = pooled / mask.sum(dim=1, keepdim=True).clamp_(min=1.0)
            parts.append(pooled.unsqueeze(1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self._perm is not None:
            out = out.index_select(1, self.perm)
        return out

    @staticmethod
    def _out_of_range(idx: Tensor, vocab: Tensor, names: Sequence[str]) -> None:
        bad = (idx >= vocab).any(dim=0).nonzero().flatten().tolist()
        detail = ", ".join(
            f"{names[j]!r}: max {int(idx[:, j].max())} >= vocab_size {int(vocab[j])}" for j in bad
        )
        raise IndexError(f"categorical indices out of range ({detail})")

    def flat(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, F * dim]`` (a view of :meth:`forward`)."""
        return self.forward(batch).flatten(start_dim=1)


class LogisticRegression(nn.Module):
    """First-order term: sum over fields of a scalar weight per value (a dim-1 FeatureEmbedding), plus bias."""

    def __init__(self, spec: FeatureSpec, use_bias: bool = True) -> None:
        super().__init__()
        # FuxiCTR's LR term builds its own dim-1 tables without pretrained vectors (use_pretrain=False)
        self.embedding = FeatureEmbedding(spec, 1, use_pretrained=False)
        self.bias = nn.Parameter(torch.zeros(1)) if use_bias else None

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``[B, 1]``."""
        out = self.embedding(batch).sum(dim=1)
        return out + self.bias if self.bias is not None else out
