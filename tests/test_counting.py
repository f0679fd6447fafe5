"""Train counts taken while staging (bars.data.counting): the compiled count of a batch of uint32 ids (work in
proportion to the batch) gives the counts np.bincount gives, as the vocabulary grows, with nulls and id jumps."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bars.data import native
from bars.data.counting import Dictionary

if native._load() is None:
    pytest.skip("the native module is not built (no C compiler at install)", allow_module_level=True)


def test_compiled_count_equals_bincount():
    rng = np.random.default_rng(3)
    d = Dictionary()
    want = np.zeros(0, dtype=np.int64)
    for b in range(40):
        top = 10 + 5000 * b * b  # the vocabulary grows, sometimes by far more than the counts array has
        ids = (rng.random(3000) ** 2 * top).astype(np.uint32)
        nulls = rng.random(3000) < 0.1
        s = pl.Series(ids).scatter(np.flatnonzero(nulls), None)
        d.count(s)
        c = np.bincount(ids[~nulls])
        want = np.concatenate([want, np.zeros(max(len(c) - len(want), 0), dtype=np.int64)])
        want[: len(c)] += c
    assert len(d.counts) >= len(want)
    np.testing.assert_array_equal(d.counts[: len(want)], want)
    assert not d.counts[len(want):].any()
    d.count(pl.Series([None, None], dtype=pl.UInt32))  # nothing to count
    d.count(pl.Series([2**32 - 1], dtype=pl.UInt32).head(0))
    np.testing.assert_array_equal(d.counts[: len(want)], want)


def test_count_takes_the_batch_only():
    """An id far above the others, then many batches of low ids: every count right, the array not regrown."""
    d = Dictionary()
    d.count(pl.Series([5_000_000], dtype=pl.UInt32))
    n = len(d.counts)
    for _ in range(10):
        d.count(pl.Series([1, 2, 2], dtype=pl.UInt32))
    assert len(d.counts) == n and d.counts[2] == 20 and d.counts[1] == 10 and d.counts[5_000_000] == 1


def test_counts_widen_before_any_could_overflow():
    """32-bit counts while the ids counted so far fit in 32 bits (no count can pass 2^32 - 1), 64-bit from the batch
    that could take one past it on, with every count kept; the vocabulary's counts are 64-bit either way."""
    d = Dictionary()
    d.count(pl.Series([1, 2, 2, 7], dtype=pl.UInt32))
    assert d.counts.dtype == np.uint32
    d.counted = 2**32 - 5  # as if 4.29 billion ids had been counted: this batch of 4 could reach 2^32 - 1
    d.count(pl.Series([2, 2, 3, 3], dtype=pl.UInt32))
    assert d.counts.dtype == np.uint32
    d.count(pl.Series([2], dtype=pl.UInt32))  # this one could pass it
    assert d.counts.dtype == np.int64
    np.testing.assert_array_equal(d.counts[:8], [0, 1, 5, 2, 0, 0, 0, 1])
    d.counts[2] = 2**32 + 3  # a count past 32 bits stays exact
    d.count(pl.Series([2], dtype=pl.UInt32))
    assert d.counts[2] == 2**32 + 4
    import pyarrow as pa

    it = native.Interner()  # 32-bit counts: the vocabulary's are 64-bit, as before
    it.count(pl.Series(it.intern_arrow(pa.array(["a", "b", "b", None]))))
    assert it.counts.dtype == np.uint32
    v = it.vocab("f", 1)
    assert v.schema["count"] == pl.Int64 and v["value"].to_list() == ["b", "a"] and v["count"].to_list() == [2, 1]
