"""OptInter's feature-pair layer (Lyu et al., "Memorize, Factorize, or be Naive: Learning Optimal Feature
Interaction Methods for CTR Prediction", ICDE 2022; official code https://github.com/fuyuanlyu/OptInter, commit
72735504, ``learn/model/model_search.py:DNN_cart_search`` and ``learn/model/model.py:DNN_cart``): one embedding
per feature pair ``(i, j)`` of categorical fields, by one of three methods.

- **memorise**: the pair's value ``(x_i, x_j)`` is a feature of its own, with its own embedding row (the
  official cross-product table ``comb_embeddings_table``). Its vocabulary is built from the training split: the
  pair values seen at least ``min_count`` times (official ``Y``, 20) get rows; every other value reads the
  pair's OOV row. When a pair has more such values than ``hash_rows``, they share ``hash_rows`` rows by a fixed
  hash (the hashing trick; the official code has no hashing: its dictionary is exact). Index 0 of either field
  (padding) gives the zero vector.
- **factorise**: ``f_i * f_j`` (element-wise), with ``f`` a second embedding table of the fields (the official
  ``addition_embedding_table``, not the backbone's field embeddings).
- **naive**: nothing (the zero vector while searching; no slot at all once chosen).

Search (``choices=None``): every pair is all three, mixed by its architecture weights ``alpha [P, 3]``:
``w = softmax(alpha / t)`` row-wise (``t``: :attr:`PairInteraction.temperature`, set by the method) and
``out_p = w_p0 * memorise_p + w_p1 * factorise_p + w_p2 * 0``; ``alpha`` starts xavier-normal (official
``initialize_alphas``). Retrain (``choices`` given): one slot per pair not chosen naive, its memorised or its
factorised embedding; a memorised table exists only for the memorised pairs, the factorisation table only over
the fields of the factorised pairs.

Both tables are :class:`FeatureEmbedding` s (so the embedding regulariser and the BARS initialisation treat
them as embeddings). With choices fixed the layer records them in its state (the buffer ``choices``: the index in
:data:`CHOICES` per pair) beside the memorised pairs' vocabularies (``keys_<k>``), so a checkpoint says which
architecture it holds (:meth:`PairInteraction.from_state` rebuilds it). ``export_friendly`` (set by ``bars export``
while tracing for ONNX, which has no ``searchsorted``) looks a pair value up by a binary search of gathers and
comparisons: the same row index, so the same scores. The size of the memorised tables is checked before anything is allocated
(:class:`~bars.models.layers.field_aware.EmbeddingMemoryError`, naming the bytes and the knobs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import Feature, FeatureSpec
from bars.models.layers.embedding import FeatureEmbedding
from bars.models.layers.field_aware import EmbeddingMemoryError, available_memory_bytes

__all__ = ["CHOICES", "PairInteraction", "all_pairs", "pair_keys", "pair_vocabulary", "sorted_position"]

CHOICES = ("memorise", "factorise", "naive")
_PRIME = 2_147_483_647  # 2^31 - 1: hash arithmetic stays below 2^63 for indices < 2^31
FLOAT32_BYTES = 4


def all_pairs(spec: FeatureSpec, fields: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Every pair ``(i, j)``, ``i`` before ``j`` in spec order, of the categorical fields (or of ``fields``)."""
    cats = [f.name for f in spec.features if f.type == "categorical"]
    if fields is not None:
        bad = [n for n in fields if n not in cats]
        if bad:
            raise ValueError(f"PairInteraction: fields {bad} are not categorical fields of the data; "
                             f"categorical fields: {cats}")
        cats = [n for n in cats if n in set(fields)]
    return [(a, b) for k, a in enumerate(cats) for b in cats[k + 1:]]


def pair_keys(a: Tensor, b: Tensor, vocab_b: int) -> Tensor:
    """The exact int64 key ``a * vocab_b + b`` of a pair value (``a``, ``b``: field indices); 0 where either
    index is 0 (padding) is left to the caller."""
    return a.long() * int(vocab_b) + b.long()


def pair_vocabulary(columns: Mapping[str, Tensor], spec: FeatureSpec, pairs: Sequence[tuple[str, str]],
                    min_count: int) -> dict[tuple[str, str], Tensor]:
    """Per pair, the sorted int64 keys (:func:`pair_keys`) of the pair values seen at least ``min_count`` times
    in ``columns`` (the training split's field indices; rows where either index is 0 are not counted)."""
    out: dict[tuple[str, str], Tensor] = {}
    for a, b in pairs:
        xa, xb = columns[a].reshape(-1).long().cpu(), columns[b].reshape(-1).long().cpu()
        ok = (xa > 0) & (xb > 0)
        keys, counts = torch.unique(pair_keys(xa[ok], xb[ok], spec[b].vocab_size), return_counts=True)
        out[(a, b)] = keys[counts >= int(min_count)].contiguous()  # torch.unique sorts
    return out


def sorted_position(known: Tensor, key: Tensor) -> Tensor:
    """``torch.searchsorted(known, key)`` (left; ``known`` sorted, 1-D) by a binary search of gathers and
    comparisons, ``ceil(log2(n + 1))`` steps: what ONNX can express (it has no searchsorted)."""
    n = known.numel()
    lo = torch.zeros_like(key)
    hi = torch.full_like(key, n)
    for _ in range(max(1, math.ceil(math.log2(n + 1)))):
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        right = known[mid.clamp(max=n - 1)] < key
        active = lo < hi
        lo = torch.where(active & right, mid + 1, lo)
        hi = torch.where(active & ~right, mid, hi)
    return lo


def _hash_constants(p: int) -> tuple[int, int, int]:
    """Three constants in [1, 2^31 - 1) for pair number ``p``: fixed (not seeded), so a pair hashes the same in
    every run."""
    def mix(x: int) -> int:
        x = (x ^ (x >> 16)) * 0x45D9F3B % 2**32
        x = (x ^ (x >> 16)) * 0x45D9F3B % 2**32
        return (x ^ (x >> 16)) % (_PRIME - 1) + 1
    return mix(3 * p + 1), mix(3 * p + 2), mix(3 * p + 3)


class PairInteraction(nn.Module):
    """The pair embeddings ``[B, S, dim]`` of a batch: ``S = P`` slots mixed by ``alpha`` while searching
    (``choices=None``), one slot per pair not chosen naive otherwise.

    ``keys[(i, j)]``: the sorted keys of the pair's known values (:func:`pair_vocabulary`). A pair's memorised
    table has ``2 + min(len(keys), hash_rows)`` rows (padding, OOV, the values). ``max_bytes`` bounds the
    float32 bytes of both tables (checked before allocation, and against the memory available now)."""

    def __init__(self, spec: FeatureSpec, dim: int, pairs: Sequence[tuple[str, str]],
                 keys: Mapping[tuple[str, str], Tensor], *, hash_rows: int = 1_000_000,
                 choices: Sequence[str] | None = None, max_bytes: int = 4 * 2**30) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"PairInteraction: dim must be >= 1, got {dim}")
        if hash_rows < 1:
            raise ValueError(f"PairInteraction: hash_rows must be >= 1, got {hash_rows}")
        self.pairs = [tuple(p) for p in pairs]
        if not self.pairs:
            raise ValueError("PairInteraction: no feature pairs (the data needs at least two categorical fields)")
        for a, b in self.pairs:
            for n in (a, b):
                if spec[n].type != "categorical":
                    raise ValueError(f"PairInteraction: pair {(a, b)}: field {n!r} is not categorical")
        missing = [p for p in self.pairs if p not in keys]
        if missing:
            raise ValueError(f"PairInteraction: no vocabulary for pairs {missing}")
        if choices is not None:
            choices = list(choices)
            if len(choices) != len(self.pairs) or any(c not in CHOICES for c in choices):
                raise ValueError(f"PairInteraction: choices must be {len(self.pairs)} of {CHOICES}, got {choices}")
        self.choices = None if choices is None else tuple(choices)
        self.dim = int(dim)
        self.hash_rows = int(hash_rows)
        self.vocab_b = [spec[b].vocab_size for _, b in self.pairs]
        self.known = [len(keys[p]) for p in self.pairs]  # known values per pair
        self.rows = [2 + min(k, self.hash_rows) for k in self.known]  # memorised table rows, padding + OOV included
        self.hashed = [k > self.hash_rows for k in self.known]

        def chosen(c: str) -> list[int]:
            return list(range(len(self.pairs))) if self.choices is None else \
                [k for k, x in enumerate(self.choices) if x == c]

        self.mem_pairs = chosen("memorise")
        self.fac_pairs = chosen("factorise")
        fac_fields = {n for k in self.fac_pairs for n in self.pairs[k]}
        self.fac_fields = tuple(f.name for f in spec.features if f.name in fac_fields)
        self.slot_pairs = list(range(len(self.pairs))) if self.choices is None else \
            [k for k, c in enumerate(self.choices) if c != "naive"]
        needed = self.memorise_params_of(self.mem_pairs) + self.factorise_params(spec, self.fac_fields)
        self._check_bytes(needed * FLOAT32_BYTES, max_bytes)

        self.mem_names = [self.slot_name(self.pairs[k]) for k in self.mem_pairs]
        if self.mem_pairs:
            mem_spec = FeatureSpec(dataset=f"{spec.dataset}:pairs", label=spec.label, features=tuple(
                Feature(name, "categorical", vocab_size=self.rows[k], source=f"{self.pairs[k][0]} x {self.pairs[k][1]}")
                for name, k in zip(self.mem_names, self.mem_pairs, strict=True)))
            self.memorised = FeatureEmbedding(mem_spec, self.dim)
        else:
            self.memorised = None
        self.factorised = FeatureEmbedding(spec, self.dim, self.fac_fields, use_pretrained=False) \
            if self.fac_fields else None
        for k in self.mem_pairs:
            self.register_buffer(f"keys_{k}", keys[self.pairs[k]].to(torch.int64).contiguous())
        self.fac_pos = {n: i for i, n in enumerate(self.fac_fields)}
        if self.choices is not None:  # the architecture, in the checkpoint (from_state)
            self.register_buffer("choices_index", torch.tensor([CHOICES.index(c) for c in self.choices],
                                                               dtype=torch.int64))
            # slot order of [memorised..., factorised...] -> slot s (a copy: forward is an exact gather)
            order = [*self.mem_pairs, *self.fac_pairs]
            self.register_buffer("slot_order", torch.tensor([order.index(k) for k in self.slot_pairs],
                                                            dtype=torch.int64), persistent=False)
        self.export_friendly = False
        self.alpha = nn.Parameter(torch.empty(len(self.pairs), len(CHOICES))) if self.choices is None else None
        self.temperature = 1.0
        self.reset_parameters()

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor], prefix: str, spec: FeatureSpec, dim: int,
                   pairs: Sequence[tuple[str, str]], *, hash_rows: int = 1_000_000,
                   max_bytes: int = 4 * 2**30) -> PairInteraction:
        """The fixed-choice layer a state dict holds (``state[prefix + "choices_index"]`` and the memorised pairs'
        ``keys_<k>``), before loading it: the architecture a checkpoint of a retrained model was trained with. A
        state without ``choices_index`` (a search's, or one saved before it was recorded) raises ValueError. The
        state holds no vocabulary of the pairs not memorised: the rebuilt layer counts them as empty (its forward does
        not read them; only :meth:`parameters_of`'s memorise-all total would differ)."""
        codes = state.get(f"{prefix}choices_index")
        if codes is None:
            raise ValueError(f"the state holds no {prefix}choices_index: not a retrained OptInter model, or one saved "
                             "before the choices were recorded in the checkpoint (rerun it: bars reproduce)")
        codes = [int(c) for c in codes.reshape(-1).tolist()]
        if len(codes) != len(pairs) or any(not 0 <= c < len(CHOICES) for c in codes):
            raise ValueError(f"the state's {prefix}choices_index {codes} does not give one of {CHOICES} for each of "
                             f"the {len(pairs)} pairs of the data")
        choices = [CHOICES[c] for c in codes]
        empty = torch.zeros(0, dtype=torch.int64)
        keys = {}
        for k, p in enumerate(pairs):
            key = state.get(f"{prefix}keys_{k}")
            if choices[k] == "memorise" and key is None:
                raise ValueError(f"the state holds no {prefix}keys_{k}: the vocabulary of memorised pair {p}")
            keys[tuple(p)] = empty if key is None else key
        return cls(spec, dim, pairs, keys, hash_rows=hash_rows, choices=choices, max_bytes=max_bytes)

    # ---------------------------------------------------------------------------------------------- sizes
    @staticmethod
    def slot_name(pair: tuple[str, str]) -> str:
        return f"{pair[0]}__x__{pair[1]}"

    def memorise_params_of(self, which: Sequence[int]) -> int:
        """Embedding parameters of the memorised tables of pairs ``which`` (padding rows excluded)."""
        return sum((self.rows[k] - 1) * self.dim for k in which)

    def factorise_params(self, spec: FeatureSpec, fields: Sequence[str]) -> int:
        """Embedding parameters of a factorisation table over ``fields`` (padding rows excluded)."""
        return sum((spec[n].vocab_size - 1) * self.dim for n in fields)

    def _check_bytes(self, needed: int, limit: int) -> None:
        detail = (f"{len(self.mem_pairs)} memorised pair tables of {sum(self.rows[k] for k in self.mem_pairs):,} rows "
                  f"(largest {max((self.rows[k] for k in self.mem_pairs), default=0):,}) and a factorisation table "
                  f"over {len(self.fac_fields)} fields, at dim {self.dim}")
        knobs = (f"lower method.hash_rows (now {self.hash_rows:,}: rows per pair), raise method.min_count (fewer "
                 f"known pair values), restrict method.fields, lower model.params.embedding_dim, or raise "
                 f"method.max_embedding_bytes (now {limit:,}) on a machine that has the memory")
        gib = 2**30
        if needed > limit:
            raise EmbeddingMemoryError(
                f"OptInter: the pair embedding tables need {needed:,} bytes ({needed / gib:.2f} GiB; {detail}); "
                f"training with Adam needs about 4x that; this exceeds method.max_embedding_bytes = {limit:,}. "
                f"To fit: {knobs}")
        free = available_memory_bytes()
        if free is not None and needed > free:
            raise EmbeddingMemoryError(
                f"OptInter: the pair embedding tables need {needed:,} bytes ({needed / gib:.2f} GiB; {detail}) but "
                f"this machine has only {free:,} bytes available (MemAvailable). To fit: {knobs}")

    @property
    def num_slots(self) -> int:
        return len(self.slot_pairs)

    def reset_parameters(self, std: float = 1e-4) -> None:
        """Tables N(0, std) (the BARS embedding initialisation), ``alpha`` xavier-normal (official)."""
        for emb in (self.memorised, self.factorised):
            if emb is not None:
                emb.reset_parameters(std)
        if self.alpha is not None:
            with torch.no_grad():
                nn.init.xavier_normal_(self.alpha)

    # ---------------------------------------------------------------------------------------------- forward
    def memorise_index(self, batch: Mapping[str, Tensor], k: int) -> Tensor:
        """Row indices ``[B]`` of pair ``k``'s values in its memorised table: 0 (padding) where either field is
        0, 1 (OOV) for a value not in the vocabulary, else ``2 + position`` (exact) or ``2 + hash`` (hashed)."""
        a, b = self.pairs[k]
        xa, xb = batch[a].long(), batch[b].long()
        key = pair_keys(xa, xb, self.vocab_b[k])
        known: Tensor = getattr(self, f"keys_{k}")
        if known.numel():
            pos = (sorted_position(known, key) if self.export_friendly else torch.searchsorted(known, key))
            pos = pos.clamp(max=known.numel() - 1)
            hit = known[pos] == key
        else:
            pos = torch.zeros_like(key)
            hit = torch.zeros_like(key, dtype=torch.bool)
        if self.hashed[k]:
            c1, c2, c3 = _hash_constants(k)
            slot = ((xa * c1 + xb * c2 + c3) % _PRIME) % self.hash_rows
        else:
            slot = pos
        idx = torch.where(hit, slot + 2, 1)
        return torch.where((xa > 0) & (xb > 0), idx, 0)

    def mixing(self) -> Tensor:
        """``softmax(alpha / temperature)`` row-wise, ``[P, 3]`` (memorise, factorise, naive); searching only."""
        if self.alpha is None:
            raise RuntimeError("PairInteraction: the choices are fixed; there is no alpha to mix by")
        return F.softmax(self.alpha / self.temperature, dim=1)

    def memorised_embeddings(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, len(mem_pairs), dim]``."""
        assert self.memorised is not None
        idx = {name: self.memorise_index(batch, k) for name, k in zip(self.mem_names, self.mem_pairs, strict=True)}
        return self.memorised(idx)

    def factorised_embeddings(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, len(fac_pairs), dim]``: ``f_i * f_j`` per factorised pair."""
        assert self.factorised is not None
        f = self.factorised(batch)
        left = torch.tensor([self.fac_pos[self.pairs[k][0]] for k in self.fac_pairs], device=f.device)
        right = torch.tensor([self.fac_pos[self.pairs[k][1]] for k in self.fac_pairs], device=f.device)
        return f.index_select(1, left) * f.index_select(1, right)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        if self.choices is None:  # search: every pair is memorised, factorised and naive, mixed
            w = self.mixing()
            mem = self.memorised_embeddings(batch)
            fac = self.factorised_embeddings(batch)
            return mem * w[:, 0].view(1, -1, 1) + fac * w[:, 1].view(1, -1, 1)  # + w[:, 2] * 0 (naive)
        parts = ([self.memorised_embeddings(batch)] if self.mem_pairs else []) + \
            ([self.factorised_embeddings(batch)] if self.fac_pairs else [])
        if not parts:
            ref = next(iter(batch.values()))
            return torch.zeros(ref.shape[0], 0, self.dim, device=ref.device, dtype=self._dtype())
        both = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return both.index_select(1, self.slot_order)  # slots in pair order (a gather: exact)

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32

    # ---------------------------------------------------------------------------------------------- choices
    @torch.no_grad()
    def chosen(self) -> list[str]:
        """The choice per pair: ``choices`` when fixed, else the argmax of ``alpha`` (= of the mixing weights at
        any temperature), as the official retrain (``cont_arch.argmax(1)``)."""
        if self.choices is not None:
            return list(self.choices)
        return [CHOICES[int(i)] for i in self.alpha.argmax(dim=1).tolist()]

    def parameters_of(self, spec: FeatureSpec, choices: Sequence[str]) -> dict[str, float]:
        """The pair counts per choice (``pairs_kept``: the fraction not naive) and the embedding parameters of the
        pair tables under ``choices`` (memorised tables + the factorisation table), against memorising every pair
        (OptInter's memorise-all baseline; the backbone's field embeddings excluded). With few known pair values
        (small data, a high ``min_count``) the factorisation table can outweigh the memorised ones: the fraction
        is then above 1."""
        mem = [k for k, c in enumerate(choices) if c == "memorise"]
        fac_fields = {n for k, c in enumerate(choices) if c == "factorise" for n in self.pairs[k]}
        kept = self.memorise_params_of(mem) + self.factorise_params(spec, sorted(fac_fields))
        total = self.memorise_params_of(range(len(self.pairs)))
        n = len(self.pairs)
        counts = {c: sum(x == c for x in choices) for c in CHOICES}
        return {"pairs_memorise": float(counts["memorise"]), "pairs_factorise": float(counts["factorise"]),
                "pairs_naive": float(counts["naive"]), "pairs_total": float(n),
                "pairs_kept": (n - counts["naive"]) / n, "pairs_kept_count": float(n - counts["naive"]),
                "pair_params_kept": kept / total if total else math.nan,
                "pair_params_kept_count": float(kept), "pair_params_total": float(total),
                "pairs_hashed": float(sum(self.hashed))}
