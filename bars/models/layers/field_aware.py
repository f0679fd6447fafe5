"""Field-aware embeddings (FFM, ONN) and the interactions that read them, with a size check before allocation.

A field-aware embedding gives every field ``f`` several embeddings ("slots"), one per other field ``g`` that it
meets in a pairwise interaction (FFM), plus one "copy" slot used on its own (ONN's operation-aware embedding).
The tables grow with ``num_fields * vocabulary * dim``, so :class:`FieldAwareEmbedding` computes the bytes it
needs first and stops with :class:`EmbeddingMemoryError` (bytes needed, the limit, the knobs to turn) instead of
letting the allocation crash the process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models.layers.embedding import FeatureEmbedding
from bars.models.layers.kernels import PairDotSum, SelectPairDots, traced

FLOAT32_BYTES = 4
GIB = 2**30


class EmbeddingMemoryError(ValueError):
    """A field-aware embedding would need more memory than allowed (or than the machine has free)."""


def embedding_rows(spec: FeatureSpec) -> tuple[int, int]:
    """``(table_rows, numeric_fields)`` of a :class:`FeatureEmbedding` over the whole ``spec``: the packed
    table's rows (one shared padding row plus ``vocab_size - 1`` per table owner; a field with
    ``share_embedding`` adds none) and the number of numeric fields (one vector each). Computed from the spec
    alone, so nothing is allocated."""
    owners: set[str] = set()
    numeric = 0
    for f in spec.features:
        if f.type == "numeric":
            numeric += 1
            continue
        o = f
        seen = {o.name}
        while o.share_embedding and o.share_embedding not in seen:
            seen.add(o.share_embedding)
            o = spec[o.share_embedding]
        owners.add(o.name)
    rows = 1 + sum(spec[n].vocab_size - 1 for n in owners) if owners else 0
    return rows, numeric


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo (bytes), or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _fmt(n: int) -> str:
    return f"{n:,} bytes ({n / GIB:.2f} GiB)"


def check_embedding_bytes(model: str, needed: int, limit: int, detail: str) -> None:
    """Raise :class:`EmbeddingMemoryError` when ``needed`` bytes of parameters exceed ``limit``
    (``model.params.max_embedding_bytes``) or the memory this machine has available now."""
    knobs = (
        f"lower model.params.embedding_dim, raise data.min_count (fewer vocabulary rows), or raise "
        f"model.params.max_embedding_bytes (now {limit:,}) on a machine that has the memory"
    )
    train = 4 * needed  # weights + gradients + Adam's two moment buffers
    if needed > limit:
        raise EmbeddingMemoryError(
            f"{model}: the field-aware embedding tables need {_fmt(needed)} ({detail}); training with Adam "
            f"needs about 4x that, {_fmt(train)}; this exceeds model.params.max_embedding_bytes = {_fmt(limit)}. "
            f"To fit: {knobs}"
        )
    free = available_memory_bytes()
    if free is not None and needed > free:
        raise EmbeddingMemoryError(
            f"{model}: the field-aware embedding tables need {_fmt(needed)} ({detail}) but this machine has "
            f"only {_fmt(free)} available (MemAvailable); training with Adam needs about {_fmt(train)}. "
            f"To fit: {knobs}"
        )


class FieldAwareEmbedding(nn.Module):
    """``[B, F, S, dim]``: ``S`` embeddings ("slots") of ``dim`` for every field of ``spec``.

    Two layouts with the same function (FuxiCTR has both; parameters transplant one-to-one):
    - ``separate_tables=True`` (FFM, ONN): ``S`` independent :class:`FeatureEmbedding` modules of width ``dim``
      (``tables[s]`` holds slot ``s`` of every field; FuxiCTR's ``embedding_layers[s]``); numeric vectors are
      initialised with fan ``(1, dim)``;
    - ``separate_tables=False`` (FFMv2, ONNv2): one :class:`FeatureEmbedding` of width ``S * dim`` viewed as
      ``[B, F, S, dim]`` (FuxiCTR's ``embedding_layer``); one gather instead of ``S``; numeric vectors are
      initialised with fan ``(1, S * dim)``.

    The size is checked before anything is allocated (:func:`check_embedding_bytes`).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        dim: int,
        num_slots: int,
        separate_tables: bool,
        max_bytes: int,
        model: str = "field-aware embedding",
    ) -> None:
        super().__init__()
        if num_slots < 1:
            raise ValueError(f"{model}: needs at least 1 embedding slot per field, got {num_slots}")
        rows, numeric = embedding_rows(spec)
        needed = (rows + numeric) * dim * num_slots * FLOAT32_BYTES
        check_embedding_bytes(
            model,
            needed,
            max_bytes,
            f"{num_slots} embeddings of dim {dim} for each of {rows:,} vocabulary rows and {numeric} numeric "
            f"fields, float32",
        )
        self.dim = dim
        self.num_slots = num_slots
        self.separate_tables = separate_tables
        if separate_tables:
            self.tables = nn.ModuleList(FeatureEmbedding(spec, dim) for _ in range(num_slots))
            self.embedding = None
        else:
            self.tables = None
            self.embedding = FeatureEmbedding(spec, dim * num_slots)
        first = self.tables[0] if self.tables is not None else self.embedding
        self.num_fields = first.num_fields
        self.field_names = first.field_names

    @property
    def slots_first_layout(self) -> bool:
        return self.tables is not None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        if self.tables is not None:
            return torch.stack([t(batch) for t in self.tables], dim=2)
        assert self.embedding is not None
        out = self.embedding(batch)
        return out.view(out.shape[0], self.num_fields, self.num_slots, self.dim)

    def parts(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """The slot embeddings as the tables hold them: with separate tables, ``S`` tensors ``[B, F, dim]`` (slot
        ``s`` of every field), else one ``[B, F * S, dim]`` (field-major); :attr:`slots_first_layout` says which.
        No copy: FFM and ONN read them in place (:meth:`FieldAwareProducts.dot_sum`, :meth:`~FieldAwareProducts.with_selected`)."""
        if self.tables is not None:
            return [t(batch) for t in self.tables]
        out = self(batch)
        return [out.view(out.shape[0], self.num_fields * self.num_slots, self.dim)]


# ------------------------------------------------------------------------------------------------------------
# Slot conventions: slot(f, g) = which of field f's embeddings is used when f meets field g (g == f: "copy")
# ------------------------------------------------------------------------------------------------------------
def ffm_slot(f: int, g: int) -> int:
    """FFM / FFMv2 (``F - 1`` slots): field ``f`` meets field ``g != f`` with slot ``g`` if ``g < f`` else
    ``g - 1``; FuxiCTR's ``field_wise_emb_list[j - 1][:, i]`` for ``i < j``."""
    if f == g:
        raise ValueError("FFM has no self slot")
    return g if g < f else g - 1


def onn_slot(f: int, g: int) -> int:
    """ONN (``F`` separate tables): table 0 is every field's copy embedding, table ``1 + ffm_slot(f, g)``
    its embedding for field ``g``."""
    return 0 if f == g else 1 + ffm_slot(f, g)


def onnv2_slot(f: int, g: int) -> int:
    """ONNv2 (``F`` slots in one wide table): slot ``g`` is field ``f``'s embedding for field ``g``, slot ``f``
    its copy embedding (the diagonal of FuxiCTR's ``[B, F, F, dim]`` view)."""
    return g


def pair_indices(num_fields: int) -> tuple[list[int], list[int]]:
    """Field pairs ``(i, j)``, ``i < j``, in row-major order: (0,1), (0,2), ..., (1,2), ..."""
    ii = [i for i in range(num_fields) for _ in range(i + 1, num_fields)]
    jj = [j for i in range(num_fields) for j in range(i + 1, num_fields)]
    return ii, jj


class FieldAwareProducts(nn.Module):
    """``[B, F, S, D] -> [B, P, D]``: for every field pair ``i < j`` (row-major) the element-wise product
    ``v_{i,j} * v_{j,i}`` of field i's embedding for field j and field j's embedding for field i, where
    ``v_{f,g} = E[:, f, slot(f, g)]``. Summed over D it is FFM's ``<v_{i,j}, v_{j,i}>`` per pair. One gather per
    side (precomputed flat indices), no Python loop over pairs."""

    def __init__(self, num_fields: int, num_slots: int, slot: Callable[[int, int], int]) -> None:
        super().__init__()
        if num_fields < 2:
            raise ValueError(f"field-aware interactions need at least 2 fields, got {num_fields}")
        ii, jj = pair_indices(num_fields)
        left = [i * num_slots + slot(i, j) for i, j in zip(ii, jj, strict=True)]
        right = [j * num_slots + slot(j, i) for i, j in zip(ii, jj, strict=True)]
        for s in (slot(i, j) for i, j in zip(ii + jj, jj + ii, strict=True)):
            if not 0 <= s < num_slots:
                raise ValueError(f"slot {s} out of range for {num_slots} slots")
        self.num_fields = num_fields
        self.num_pairs = len(ii)
        self.num_slots = num_slots
        used = left + right
        # each slot in at most one pair (FFM: exactly one): dot_sum's one-pass kernel applies
        self.disjoint = len(set(used)) == len(used)
        self.covers = self.disjoint and len(used) == num_fields * num_slots
        self.register_buffer("left", torch.tensor(left, dtype=torch.int64), persistent=False)
        self.register_buffer("right", torch.tensor(right, dtype=torch.int64), persistent=False)
        # the same slots in the separate tables' layout (FieldAwareEmbedding.parts, S tables [B, F, D]): s * F + f
        def transposed(ix: list[int]) -> Tensor:
            return torch.tensor([(i % num_slots) * num_fields + i // num_slots for i in ix], dtype=torch.int64)

        self.register_buffer("left_sf", transposed(left), persistent=False)
        self.register_buffer("right_sf", transposed(right), persistent=False)
        self._paired = set(used) if self.disjoint else set()  # with_selected: slots in pairs ([B, F, S] order)

    def forward(self, emb: Tensor) -> Tensor:
        b, f, s, d = emb.shape
        flat = emb.reshape(b, f * s, d)
        # advanced indexing: its backward (index_put with accumulate) is ~10-20x faster on CPU than
        # index_select's (index_add_ along a middle axis)
        return flat[:, self.left] * flat[:, self.right]

    def dot_sum(self, parts: list[Tensor], slots_first: bool = False) -> Tensor:
        """``[B]``: ``forward(emb).sum(dim=(1, 2))``, FFM's pairwise term, of the slot embeddings ``emb`` given as
        :meth:`FieldAwareEmbedding.parts` gives them (``slots_first``: ``S`` tables ``[B, F, D]``, else one
        ``[B, F * S, D]``). When each slot is in at most one pair (FFM, FFMv2), on CPU outside traced graphs, one
        pass over each row forward and backward, reading the tables in place
        (:class:`bars.models.layers.kernels.PairDotSum`: no stacked copy, no ``[B, P, D]`` products; the sum in
        another order, within float rounding)."""
        if not self.disjoint or any(x.device.type != "cpu" for x in parts) or traced():
            return self(self._stacked(parts, slots_first)).sum(dim=(1, 2))
        left, right = (self.left_sf, self.right_sf) if slots_first else (self.left, self.right)
        return PairDotSum.apply(left, right, self.covers, *(x.contiguous() for x in parts))

    def _stacked(self, parts: list[Tensor], slots_first: bool) -> Tensor:
        """:meth:`FieldAwareEmbedding.parts`'s tensors as one ``[B, F, S, D]``."""
        b, d = parts[0].shape[0], parts[0].shape[-1]
        if slots_first:
            return torch.stack(parts, dim=1).transpose(1, 2)
        return parts[0].view(b, self.num_fields, self.num_slots, d)

    def with_selected(self, parts: list[Tensor], select: SlotSelect, slots_first: bool = False) -> Tensor:
        """``[B, F * D + P]``: ``cat([select(emb).flatten(1), forward(emb).sum(-1)], 1)``, ONN's DNN input, of the
        slot embeddings ``emb`` given as :meth:`FieldAwareEmbedding.parts` gives them (``slots_first``: ``S``
        tables ``[B, F, D]``, else one ``[B, F * S, D]``). When the selected slots and the pairs' slots are all
        distinct (ONN, ONNv2), on CPU outside traced graphs, one pass over each row forward and backward
        (:class:`bars.models.layers.kernels.SelectPairDots`: no stacked copy of the tables, no ``[B, P, D]``
        gathers or products, no concatenation; each dot product's sum over D in another order, within float
        rounding)."""
        cpu = all(x.device.type == "cpu" for x in parts)
        used = set(select.index.tolist()) | self._paired if cpu and not traced() else set()  # [B, F, S] order
        if len(used) != select.num_fields + 2 * self.num_pairs:  # not all distinct, or not this path
            e = self._stacked(parts, slots_first)
            return torch.cat([select(e).flatten(start_dim=1), self(e).sum(dim=-1)], dim=1)
        sel, left, right = ((select.index_sf, self.left_sf, self.right_sf) if slots_first
                            else (select.index, self.left, self.right))
        covers = len(used) == self.num_fields * self.num_slots
        return SelectPairDots.apply(sel, left, right, covers, *(x.contiguous() for x in parts))


class SlotSelect(nn.Module):
    """``[B, F, S, D] -> [B, F, D]``: field f's own ("copy") slot ``slot(f, f)`` (ONN's diagonal embedding)."""

    def __init__(self, num_fields: int, num_slots: int, slot: Callable[[int, int], int]) -> None:
        super().__init__()
        self.num_fields = num_fields
        idx = [f * num_slots + slot(f, f) for f in range(num_fields)]
        self.register_buffer("index", torch.tensor(idx, dtype=torch.int64), persistent=False)
        # the same slots in the separate tables' layout (FieldAwareEmbedding.parts): s * F + f
        idx_sf = [slot(f, f) * num_fields + f for f in range(num_fields)]
        self.register_buffer("index_sf", torch.tensor(idx_sf, dtype=torch.int64), persistent=False)

    def forward(self, emb: Tensor) -> Tensor:
        b, f, s, d = emb.shape
        return emb.reshape(b, f * s, d)[:, self.index]
