"""Reusable, vectorised transforms (polars expressions and numpy): bucketing, time fields, seeded split
assignment, vocabularies with min count and OOV, and the encoders that apply them.

Index convention (bars.data.spec): 0 = padding, 1 = OOV, 2+ = known values by train count descending, then by
value ascending (natural order of the column's dtype). A missing categorical value is encoded by the dataset's
``missing`` rule (:data:`MISSING_RULES`): ``oov`` (the default, as FuxiCTR: missing values share the learned OOV
row with unseen and rare ones) or ``padding`` (index 0, the zero row that gets no gradient; this project's
encoding before 2026-12).
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl
import pyarrow as pa

from bars.data.spec import DEFAULT_MIN_COUNT, FIRST_KNOWN_INDEX, OOV_INDEX, PAD_INDEX

SPLITS = ("train", "valid", "test")


# -- row transforms ---------------------------------------------------------------------------------------
def _criteo_bucket_formula(x: pl.Expr) -> pl.Expr:
    return pl.when(x > 2).then((x.cast(pl.Float64).clip(1.0).log() ** 2).floor().cast(pl.Int64)).otherwise(x)


BUCKET_TABLE_SIZE = 1 << 16  # values 0 .. 65535 are bucketed by a table computed with the formula itself


def _formula_of(xs: np.ndarray) -> np.ndarray:
    return pl.DataFrame({"x": xs.astype(np.int64)}).select(_criteo_bucket_formula(pl.col("x")))["x"].to_numpy()


@functools.cache
def _bucket_table() -> tuple[np.ndarray, np.ndarray, int]:
    """The formula's buckets of 0 .. BUCKET_TABLE_SIZE - 1; above the table, ``bounds`` (the smallest x of each
    later bucket, found by bisection with the formula itself: the formula is non-decreasing for x > 2) and
    ``base`` (the bucket at the table's end): bucket(x) = base + #(bounds <= x)."""
    table = _formula_of(np.arange(BUCKET_TABLE_SIZE, dtype=np.int64))
    if table[0] != 0:  # the compiled pass reads a missing value as 0
        raise AssertionError("criteo bucket of 0 must be 0")
    top = np.iinfo(np.int64).max
    base, last = _formula_of(np.array([BUCKET_TABLE_SIZE, top]))
    buckets = np.arange(base + 1, last + 1)
    lo = np.full(len(buckets), BUCKET_TABLE_SIZE, dtype=np.int64)  # formula(lo) < bucket <= formula(hi)
    hi = np.full(len(buckets), top, dtype=np.int64)
    while np.any(hi - lo > 1):
        mid = lo + (hi - lo) // 2
        ge = _formula_of(mid) >= buckets
        hi, lo = np.where(ge, mid, hi), np.where(ge, lo, mid)
    return table, hi, int(base)


def _bucket_values(s: pl.Series) -> pl.Series:
    # imported here: bars.data.native imports bars.data.counting, which imports this module
    from bars.data import native

    table, bounds, base = _bucket_table()
    out = native.bucket_by_table(s.cast(pl.Int64).to_arrow(), table, bounds, base)
    if out is None:
        x = s.fill_null(0).cast(pl.Int64).to_numpy()
        out = table[np.clip(x, 0, BUCKET_TABLE_SIZE - 1)]
        above = x >= BUCKET_TABLE_SIZE
        out[above] = base + np.searchsorted(bounds, x[above], side="right")
        out[x < 0] = x[x < 0]
    return pl.Series(s.name, out, dtype=pl.Int64)


def criteo_bucket(col: str) -> pl.Expr:
    """BARS x4 Criteo integer field: missing -> 0; x > 2 -> floor(ln(x)^2); else x (kept as is). Computed from
    the formula's own values, so bit for bit the formula's: values in [0, BUCKET_TABLE_SIZE) are looked up in a
    table it filled, larger ones by their bucket's bounds, which bisection with it found (``_bucket_table``). One
    compiled pass per column (the native module; numpy without it), where the formula takes a logarithm of every
    value."""
    return pl.col(col).map_batches(_bucket_values, return_dtype=pl.Int64, is_elementwise=True).alias(col)


def avazu_hour_fields(col: str = "hour") -> list[pl.Expr]:
    """Avazu ``hour`` (YYMMDDHH) -> hour (HH), weekday (0 = Monday) and weekend (1 for Sat/Sun)."""
    s = pl.col(col).cast(pl.Int64)
    date = pl.date(2000 + s // 1_000_000, (s // 10_000) % 100, (s // 100) % 100)
    weekday = date.dt.weekday() - 1  # polars: Monday = 1
    return [
        (s % 100).alias("hour"),
        weekday.alias("weekday"),
        (weekday >= 5).cast(pl.Int64).alias("weekend"),
    ]


def strip_libsvm(col: str) -> pl.Expr:
    """``"5039:1"`` -> ``"5039"`` (the value of a one-hot libsvm token is its id)."""
    return pl.col(col).str.split_exact(":", 1).struct.field("field_0").alias(col)


def split_sequence(col: str, sep: str) -> pl.Expr:
    """``"a|b||c"`` -> ``["a", "b", "c"]`` (empty tokens dropped; missing -> [])."""
    return (
        pl.col(col).fill_null("").str.split(sep).list.eval(pl.element().filter(pl.element() != "")).alias(col)
    )


# -- seeded split -----------------------------------------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def assign_split(start: int, n: int, seed: int, ratios: tuple[float, float, float]) -> np.ndarray:
    """Split id (0 train, 1 valid, 2 test) for rows ``start .. start+n-1`` of an input.

    Each row is assigned independently from a hash of (seed, row number): deterministic, independent of
    batch sizes and of the machine, streamable. Expected proportions are ``ratios`` (normalised).
    """
    r = np.asarray(ratios, dtype=np.float64)
    edges = np.cumsum(r / r.sum())[:-1]
    with np.errstate(over="ignore"):
        key = np.arange(start, start + n, dtype=np.uint64) + _splitmix64(np.array([seed], dtype=np.uint64))
    u = (_splitmix64(key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.searchsorted(edges, u, side="right").astype(np.uint8)


# -- vocabularies -----------------------------------------------------------------------------------------
def min_count_of(data: dict) -> int:
    """A dataset config's ``min_count`` (``DEFAULT_MIN_COUNT`` when absent): the one place it is read."""
    return int(data.get("min_count", DEFAULT_MIN_COUNT))


MISSING_RULES = {"oov": OOV_INDEX, "padding": PAD_INDEX}
DEFAULT_MISSING = "oov"


def missing_of(data: dict) -> str:
    """A dataset config's ``missing`` rule, checked: the one place it is read. The key is required: a config
    recorded without it predates the rule (its data were encoded with ``padding``; see bars.reproduce), so a
    silent default would make such records ambiguous."""
    if "missing" not in data:
        from bars.data.errors import DataError

        raise DataError(f"data={data.get('name')}: data.missing is required: 'oov' (as FuxiCTR: a missing "
                        f"categorical value gets the learned OOV row) or 'padding' (the zero row 0, no gradient)")
    rule = data["missing"]
    if rule not in MISSING_RULES:
        from bars.data.errors import DataError

        raise DataError(f"data={data.get('name')}: data.missing: expected one of {sorted(MISSING_RULES)}, "
                        f"got {rule!r}")
    return str(rule)


def missing_index(rule: str) -> int:
    """The index a missing categorical value gets under ``rule``."""
    if rule not in MISSING_RULES:
        raise ValueError(f"missing rule: expected one of {sorted(MISSING_RULES)}, got {rule!r}")
    return MISSING_RULES[rule]


def vocab_order(counts: pl.DataFrame | pl.LazyFrame, value: str, min_count: int, count: str = "count"):
    """THE vocabulary rule, the only definition of it: keep the values whose train ``count`` is >= ``min_count``
    (clamped to >= 1: a value never seen in train is never known), ordered by count descending, then by ``value``
    ascending (the natural order of its dtype). Row ``i`` of the result gets index ``FIRST_KNOWN_INDEX + i``."""
    return counts.filter(pl.col(count) >= max(int(min_count), 1)).sort([count, value], descending=[True, False])


def vocab_query(train: pl.LazyFrame, col: str, min_count: int, sequence: bool = False) -> pl.LazyFrame:
    """The vocabulary of ``col`` (a sequence field: of its elements) over a train frame, by :func:`vocab_order`."""
    lf = train.select(pl.col(col))
    if sequence:
        lf = lf.explode(col)
    return vocab_order(lf.drop_nulls().group_by(col).agg(pl.len().alias("count")), col, min_count)


def encode_categorical(col: str, values: pl.Series, *, missing: str) -> pl.Expr:
    """Value -> index: unseen/rare -> 1, known -> 2 + rank, missing -> by the ``missing`` rule (oov: 1, padding: 0)."""
    idx = pl.Series(np.arange(FIRST_KNOWN_INDEX, FIRST_KNOWN_INDEX + len(values), dtype=np.int32))
    mapped = pl.col(col).replace_strict(values, idx, default=OOV_INDEX, return_dtype=pl.Int32)
    return pl.when(pl.col(col).is_null()).then(pl.lit(missing_index(missing), pl.Int32)).otherwise(mapped).alias(col)


def encode_sequence(col: str, values: pl.Series, max_len: int, padding: str = "post") -> pl.Expr:
    """List of values -> fixed-size array of ``max_len`` indices. ``padding="post"``: the first ``max_len`` values,
    0-padded at the end; ``"pre"``: the last ``max_len`` values, 0-padded at the start (FuxiCTR truncates on the
    side it pads: keras ``pad_sequences(padding=p, truncating=p)``)."""
    if padding not in ("post", "pre"):
        raise ValueError(f"sequence {col!r}: padding must be 'post' or 'pre', got {padding!r}")
    idx = pl.Series(np.arange(FIRST_KNOWN_INDEX, FIRST_KNOWN_INDEX + len(values), dtype=np.int32))
    kept = pl.col(col).list.head(max_len) if padding == "post" else pl.col(col).list.tail(max_len)
    enc = (
        kept
        .list.eval(pl.element().replace_strict(values, idx, default=OOV_INDEX, return_dtype=pl.Int32))
        .fill_null(pl.lit([], dtype=pl.List(pl.Int32)))
    )
    pad = pl.lit([PAD_INDEX] * max_len, dtype=pl.List(pl.Int32))
    if padding == "post":
        return pl.concat_list([enc, pad]).list.head(max_len).list.to_array(max_len).alias(col)
    return pl.concat_list([pad, enc]).list.tail(max_len).list.to_array(max_len).alias(col)


def encode_numeric(col: str) -> pl.Expr:
    """Numeric fields stay numeric: float32, missing -> 0.0."""
    return pl.col(col).cast(pl.Float32).fill_null(0.0).fill_nan(0.0).alias(col)


# -- behaviour histories ----------------------------------------------------------------------------------
def user_histories(events: pl.DataFrame, user: str, time: str, items: dict[str, str], max_len: int,
                   tiebreak: str | None = None, where: str | None = None) -> pl.DataFrame:
    """Each event's behaviour history: for every row of ``events``, the lists of ``items`` (output column ->
    input column, e.g. ``{"hist_movies": "movie", "hist_genres": "genre"}``) of the same ``user``'s events
    STRICTLY before its ``time`` (events at the same time are not history: no leakage), oldest first, the most
    recent ``max_len`` kept. ``where``: a boolean column; only events where it is true are history (e.g. the
    clicks), while every row gets one. Rows keep their input order; the input columns are kept and the lists
    added. Events of one user are ordered by ``time`` then ``tiebreak`` (default: input order): deterministic.
    Vectorised; memory O(rows x max_len).
    """
    if max_len < 1:
        raise ValueError(f"user_histories: max_len must be >= 1, got {max_len}")
    n = events.height
    keys = [events[user].to_numpy(), events[time].to_numpy()]
    tie = events[tiebreak].to_numpy() if tiebreak else np.arange(n)
    order = np.lexsort((np.arange(n), tie, keys[1], keys[0]))  # by user, time, tiebreak, input order
    u, t = keys[0][order], keys[1][order]
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    new_time = new_user.copy()
    new_time[1:] |= t[1:] != t[:-1]
    idx = np.arange(n)
    user_start = np.maximum.accumulate(np.where(new_user, idx, 0))
    end = np.maximum.accumulate(np.where(new_time, idx, 0))  # first event of this (user, time): history ends here
    mask = np.ones(n, dtype=bool) if where is None else events[where].fill_null(False).cast(pl.Boolean).to_numpy()
    mask = mask[order]
    before = np.zeros(n + 1, dtype=np.int64)  # before[i] = history events among sorted positions < i
    np.cumsum(mask, out=before[1:])
    hpos = np.flatnonzero(mask)  # sorted positions of the history events
    stop = before[end]
    start = np.maximum(before[user_start], stop - max_len)
    lengths = stop - start
    back = np.empty(n, dtype=np.int64)
    back[order] = idx  # row i of the input is sorted row back[i]
    row_len = lengths[back]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_len, out=offsets[1:])
    # for every element of every row's list (input-row order): its index into hpos
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], row_len)
    gather = order[hpos[np.repeat(start[back], row_len) + within]]  # the input row of every history element
    out = []
    for o, c in items.items():
        values = events[c].gather(pl.Series(gather, dtype=pl.Int64))
        lists = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), values.to_arrow())
        out.append(pl.Series(o, lists).cast(pl.List(values.dtype)))
    return events.with_columns(out)
