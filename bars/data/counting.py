"""Train counts of categorical fields, taken while the engine stages raw batches (bars.data.engine): string
fields are interned (:class:`Dictionary`: a polars Categorical on private categories, staged as uint32 ids),
other fields counted (:class:`Counter`: an array for integers of a small range, else merged per-batch counts).
Both give the vocabulary by the one rule (``bars.data.transforms.vocab_order``) and Counter an encoder."""

from __future__ import annotations

import numpy as np
import polars as pl

from bars.data import transforms as T
from bars.data.spec import FIRST_KNOWN_INDEX, OOV_INDEX


class Dictionary:
    """Interns the string values of one categorical field while staging: each distinct value gets an integer id
    (a polars Categorical on private categories), so staged files hold uint32 ids instead of strings and the
    vocabulary count and the encoding work on integers. Ids follow arrival order; the vocabulary (train count
    descending, then value) and so the output do not depend on them."""

    def __init__(self) -> None:
        self.categories = pl.Categories.random()
        self.dtype = pl.Categorical(self.categories)
        self._alive = pl.Series([], dtype=pl.String).cast(self.dtype)  # the mapping lives as long as this
        self.size = 0  # 1 + the largest id staged
        self.counts = np.zeros(0, dtype=np.uint32)  # train count per id, counted while staging
        self.counted = 0  # ids counted so far: while it fits in 32 bits, so does every count

    def count(self, ids: pl.Series) -> None:
        arr = ids.drop_nulls().to_numpy()
        if not len(arr):
            return
        from bars.data.native import _load  # (not at the top: bars.data.native imports this module)

        self.counted += len(arr)
        if self.counted > np.iinfo(np.uint32).max and self.counts.dtype != np.int64:
            self.counts = self.counts.astype(np.int64)  # a count could pass 2^32 - 1 now: 64 bits from here on
        if arr.dtype == np.uint32 and (lib := _load()) is not None:
            # the compiled count: work in proportion to the batch; ``counts`` grows by a quarter at least, so its
            # copies and zeroed tail (ids not seen yet) cost O(1) per id over the whole read. 32-bit counts while
            # no count can overflow them (any dataset under 4.29 billion rows): half the memory at Criteo's ~33M
            # distinct values
            arr = np.ascontiguousarray(arr)
            need = int(arr.max()) + 1
            if need > len(self.counts):
                grown = np.zeros(max(need, len(self.counts) + len(self.counts) // 4), dtype=self.counts.dtype)
                grown[: len(self.counts)] = self.counts
                self.counts = grown
            kernel = lib.bars_count_ids if self.counts.dtype == np.int64 else lib.bars_count_ids32
            kernel(self.counts.ctypes.data, arr.ctypes.data, len(arr))
            return
        self.counts = self.counts.astype(np.int64, copy=False)
        c = np.bincount(arr, minlength=len(self.counts))
        if len(c) > len(self.counts):
            c[: len(self.counts)] += self.counts
            self.counts = c
        else:
            self.counts += c

    def vocab(self, col: str, min_count: int) -> pl.DataFrame:
        """Known ids with their counts and values, in index order, by the vocabulary rule (``T.vocab_order``)."""
        # ids seen in train at least min_count times: the rule's filter (vocab_order applies it again) taken before
        # the values are looked up, so a rare value's string is never materialised (most of Criteo's ~33M)
        ids = np.flatnonzero(self.counts >= max(int(min_count), 1)).astype(np.uint32)
        v = pl.DataFrame({col: ids, "count": self.counts[ids].astype(np.int64)})
        keys = self.order_keys(ids)
        if keys is None:
            return T.vocab_order(v.with_columns(self.values(v[col]).alias("value")), "value", min_count)
        # integers that order as the values do: the rule sorts them, then the kept values are looked up in the
        # final order (at Criteo's cardinality half the time and memory of sorting millions of strings)
        v = T.vocab_order(v.with_columns(pl.Series("value", keys)), "value", min_count)
        return v.with_columns(self.values(v[col]).alias("value"))

    def order_keys(self, ids: np.ndarray) -> np.ndarray | None:
        """Integers, one per id of ``ids``, whose order is that of the ids' values (None: there are none, the
        values are sorted themselves). The native interner has them while its values are 8 hex digits."""
        return None

    def encode(self, col: str) -> pl.Expr:
        return pl.col(col).cast(self.dtype).to_physical().alias(col)

    def release(self) -> None:
        """Drop the counts once the vocabulary is taken (the engine's encoding reads staged ids only)."""
        self.counts = np.zeros(0, dtype=np.uint32)

    def values(self, ids: pl.Series) -> pl.Series:
        table = self.categories.to_series()  # position = id
        if len(table) < self.size or table.null_count():
            cats = self.categories
            return pl.Series([cats[i] for i in ids.to_list()], dtype=pl.String)
        return table.cast(pl.String).gather(ids).rename("")


_DENSE_INTS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)
DENSE_RANGE = 1 << 20  # integer fields whose values span less than this are counted and encoded by array index


class Counter:
    """Train counts of a non-interned categorical field, counted while staging. Integers of a small range (the
    usual case: bucketed Criteo fields) are counted into an array indexed by ``value - lo``; anything else into
    per-batch counts, merged whenever many have piled up (memory stays bounded by the number of distinct values)."""

    def __init__(self, col: str, dtype: pl.DataType) -> None:
        self.col, self.dtype, self.parts, self.rows = col, dtype, [], 0
        self.dense: np.ndarray | None = np.zeros(0, dtype=np.int64) if dtype in _DENSE_INTS else None
        self.lo = 0

    def count(self, s: pl.Series) -> None:
        if self.dense is not None:
            arr = s.drop_nulls().to_numpy()
            if not len(arr):
                return
            lo, hi = int(arr.min()), int(arr.max())
            if len(self.dense):
                lo, hi = min(lo, self.lo), max(hi, self.lo + len(self.dense) - 1)
            if hi - lo < DENSE_RANGE:
                if lo != self.lo or hi - lo + 1 > len(self.dense):
                    grown = np.zeros(hi - lo + 1, dtype=np.int64)
                    grown[self.lo - lo: self.lo - lo + len(self.dense)] = self.dense
                    self.dense, self.lo = grown, lo
                self.dense += np.bincount(arr.astype(np.int64) - lo, minlength=len(self.dense))
                return
            self._spill()
        self.parts.append(s.drop_nulls().to_frame(self.col).group_by(self.col).agg(pl.len().cast(pl.Int64).alias("count")))
        self.rows += self.parts[-1].height
        if len(self.parts) >= 64 or self.rows > (1 << 22):
            self._merge()

    def _spill(self) -> None:
        """Leave the array for per-batch counts (a value far outside the range seen so far)."""
        vals = np.flatnonzero(self.dense)
        self.parts.append(pl.DataFrame({self.col: vals + self.lo, "count": self.dense[vals]})
                          .with_columns(pl.col(self.col).cast(self.dtype)))
        self.rows += self.parts[-1].height
        self.dense = None

    def _merge(self) -> None:
        if len(self.parts) > 1:
            self.parts = [pl.concat(self.parts).group_by(self.col).agg(pl.col("count").sum())]
        self.rows = self.parts[0].height if self.parts else 0

    def vocab(self, min_count: int) -> pl.DataFrame:
        """Known values in index order, by the vocabulary rule (``T.vocab_order``)."""
        if self.dense is not None:
            vals = np.flatnonzero(self.dense)  # values seen in train
            v = pl.DataFrame({self.col: vals + self.lo, "count": self.dense[vals]})
            return T.vocab_order(v.with_columns(pl.col(self.col).cast(self.dtype)), self.col, min_count)
        self._merge()
        if not self.parts:
            return pl.DataFrame({self.col: [], "count": []}, schema={self.col: self.dtype, "count": pl.Int64})
        return T.vocab_order(self.parts[0], self.col, min_count)

    def encoder(self, values: pl.Series, missing: str) -> pl.Expr | None:
        """Value -> index by array lookup (as T.encode_categorical), when the values span a small range."""
        if self.dense is None:
            return None
        lo, hi = self.lo, self.lo + max(len(self.dense), 1) - 1
        remap = np.full(hi - lo + 1, OOV_INDEX, dtype=np.int32)
        remap[values.to_numpy().astype(np.int64) - lo] = np.arange(FIRST_KNOWN_INDEX, FIRST_KNOWN_INDEX + len(values),
                                                                   dtype=np.int32)
        x = pl.col(self.col)
        return (pl.when(x.is_null()).then(pl.lit(T.missing_index(missing), pl.Int32))
                .when((x >= lo) & (x <= hi)).then(pl.lit(pl.Series(remap)).gather((x.cast(pl.Int64) - lo).clip(0, hi - lo)))
                .otherwise(pl.lit(OOV_INDEX, pl.Int32)).alias(self.col))
