"""The preprocessing engine every dataset uses: raw batches -> staged Parquet -> vocabularies -> encoded splits.

A dataset is a :class:`Recipe` (sources + fields + an optional per-batch row transform), declared by a recipe
function (``bars.data.recipes``, named by ``recipe:`` in ``conf/data/<d>.yaml``, or a ``datasets/<d>/prepare.py``
script); the BARS families add their protocol transforms (bucketing, time fields) on top.

Memory stays bounded (by the batch size and the vocabularies, not the row count): raw files are read in blocks
(pyarrow streaming CSV, parsed one batch ahead in a thread), each batch is transformed and appended to a staged
Arrow IPC file per split, with every string categorical field replaced by integer ids (:class:`_Dictionary`);
the train counts of categorical fields are taken while staging (sequence fields: by polars over the staged train
file); encoding streams each staged file batch by batch into the final Parquet file (fixed row groups; valid and
test alongside train), so nothing is held whole. Staged files are uncompressed (compressing and decompressing
them cost more CPU than anything else but parsing and interning): staging needs free disk of about the raw
input's size (Criteo-format: ~210 bytes per row) next to the output folder.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

from bars.data import transforms as T
from bars.data.errors import DataError
from bars.data.sources import Source, read_batches, verify_checksum
from bars.data.spec import DEFAULT_MIN_COUNT, FIRST_KNOWN_INDEX, OOV_INDEX, PAD_INDEX, Feature, FeatureSpec
from bars.data.vocab import MANIFEST_KEY, write_vocabularies
from bars.data.writer import MANIFEST, SPEC, write_json
from bars.fileio import file_digest

FORMAT_VERSION = 2  # bump when the engine's output for the same config changes (2: pyarrow-written splits)
SPLITS = T.SPLITS
ROW_GROUP_ROWS = 256 * 1024  # rows per Parquet row group of the output splits (fixed: output bytes depend on it)
STAGE_COMPRESSION = None  # staged IPC files: uncompressed (lz4 cost ~0.6 CPU-s per 1M Criteo rows)


@dataclass
class Field:
    """One output feature. ``max_len`` (sequence): None = longest sequence in train, capped at ``max_len_cap``."""

    name: str
    type: str = "categorical"
    min_count: int = DEFAULT_MIN_COUNT
    max_len: int | None = None
    sep: str = "|"
    source: str = ""


@dataclass
class Recipe:
    name: str
    sources: list[Source]
    fields: list[Field]
    label: str = "label"
    transform: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 2021
    rows: int | None = None
    params: dict = field(default_factory=dict)
    layout: str = ""
    official_split: bool = False
    notes: dict = field(default_factory=dict)
    max_len_cap: int = 64

    @property
    def seeded_split(self) -> bool:
        return any(s.split is None for s in self.sources)

    def fingerprint_payload(self) -> dict:
        """Everything that decides the output bytes, and nothing about where files live."""
        params = dict(self.params)
        if not self.seeded_split:
            params.pop("split_seed", None)
            params.pop("split_ratios", None)
        inputs = []
        for s in self.sources:
            ident = {"file": s.path.name, "split": s.split}
            if s.md5:
                ident["md5"] = s.md5
            else:
                try:
                    ident["bytes"] = s.path.stat().st_size
                except FileNotFoundError:
                    raise DataError(f"{s.path}: raw file not found") from None
            inputs.append(ident)
        return {"format": FORMAT_VERSION, "dataset": self.name, "layout": self.layout, "params": params,
                "inputs": inputs, "rows": self.rows}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Progress:
    def __init__(self, label: str):
        self.label, self.rows, self.t0, self.last = label, 0, time.perf_counter(), 0.0

    def add(self, n: int) -> None:
        self.rows += n
        now = time.perf_counter()
        if now - self.last > 1.0:
            self.last = now
            rate = self.rows / max(now - self.t0, 1e-9)
            _log(f"  {self.label}: {self.rows:,} rows ({rate:,.0f} rows/s)")

    def done(self) -> float:
        dt = time.perf_counter() - self.t0
        _log(f"  {self.label}: {self.rows:,} rows in {dt:.1f} s ({self.rows / max(dt, 1e-9):,.0f} rows/s)")
        return dt


def finish_batch(recipe: Recipe, src: Source, df: pl.DataFrame, line0: int, *,
                 label_required: bool = True) -> pl.DataFrame:
    """Apply the recipe's transform, split sequences, select and check the label: 0/1, never missing (with
    ``label_required=False``, as ``bars predict`` reads new rows: 0/1 or missing)."""
    if src.fmt == "libsvm":
        df = df.with_columns([T.strip_libsvm(c) for c in df.columns if c != src.label])
    if recipe.transform is not None:
        df = recipe.transform(df)
    if recipe.label not in df.columns and src.label in df.columns:
        df = df.rename({src.label: recipe.label})
    missing = [c for c in [recipe.label] + [f.name for f in recipe.fields] if c not in df.columns]
    if missing:
        raise DataError(f"{src.path}: columns {missing} not found; the input has {df.columns}")
    exprs = []
    for f in recipe.fields:
        if f.type == "sequence" and df.schema[f.name] == pl.String:
            exprs.append(T.split_sequence(f.name, f.sep))
        else:
            exprs.append(pl.col(f.name))
    lab = df[recipe.label]
    if lab.dtype == pl.String:
        lab = lab.str.strip_chars().cast(pl.Float64, strict=False)
    lab = lab.cast(pl.Float64, strict=False)
    bad = ~lab.is_in([0.0, 1.0])
    bad = (bad | lab.is_null()) if label_required else bad.fill_null(False)
    if bad.any():
        i = int(bad.arg_max())
        raw = df[recipe.label][i]
        where = f"{src.path}:{line0 + i}" if src.fmt != "parquet" else f"{src.path}: row {line0 + i}"
        raise DataError(f"{where}: label {recipe.label!r} is {raw!r}: expected 0 or 1")
    return df.select(*exprs, lab.cast(pl.Float32).alias(recipe.label))


def prefetch(it, depth: int = 2):
    """Run the raw reader (C++ parsing, GIL released) one batch ahead of the polars transforms."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def work():
        try:
            for item in it:
                q.put(item)
            q.put(end)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            q.put(e)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    while True:
        item = q.get()
        if item is end:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    th.join()


class _Dictionary:
    """Interns the string values of one categorical field while staging: each distinct value gets an integer id
    (a polars Categorical on private categories), so staged files hold uint32 ids instead of strings and the
    vocabulary count and the encoding work on integers. Ids follow arrival order; the vocabulary (train count
    descending, then value) and so the output do not depend on them."""

    def __init__(self) -> None:
        self.categories = pl.Categories.random()
        self.dtype = pl.Categorical(self.categories)
        self._alive = pl.Series([], dtype=pl.String).cast(self.dtype)  # the mapping lives as long as this
        self.size = 0  # 1 + the largest id staged
        self.counts = np.zeros(0, dtype=np.int64)  # train count per id, counted while staging

    def count(self, ids: pl.Series) -> None:
        arr = ids.drop_nulls().to_numpy()
        if not len(arr):
            return
        c = np.bincount(arr, minlength=len(self.counts))
        if len(c) > len(self.counts):
            c[: len(self.counts)] += self.counts
            self.counts = c
        else:
            self.counts += c

    def vocab(self, col: str, min_count: int) -> pl.DataFrame:
        """Known ids with their counts and values, in index order, by the vocabulary rule (``T.vocab_order``)."""
        ids = np.flatnonzero(self.counts).astype(np.uint32)  # ids seen in train
        v = pl.DataFrame({col: ids, "count": self.counts[ids]})
        v = v.with_columns(self.values(v[col]).alias("value"))
        return T.vocab_order(v, "value", min_count)

    def encode(self, col: str) -> pl.Expr:
        return pl.col(col).cast(self.dtype).to_physical().alias(col)

    def values(self, ids: pl.Series) -> pl.Series:
        table = self.categories.to_series()  # position = id
        if len(table) < self.size or table.null_count():
            cats = self.categories
            return pl.Series([cats[i] for i in ids.to_list()], dtype=pl.String)
        return table.cast(pl.String).gather(ids).rename("")


_DENSE_INTS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)
DENSE_RANGE = 1 << 20  # integer fields whose values span less than this are counted and encoded by array index


class _Counter:
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

    def encoder(self, values: pl.Series) -> pl.Expr | None:
        """Value -> index by array lookup (as T.encode_categorical), when the values span a small range."""
        if self.dense is None:
            return None
        lo, hi = self.lo, self.lo + max(len(self.dense), 1) - 1
        remap = np.full(hi - lo + 1, OOV_INDEX, dtype=np.int32)
        remap[values.to_numpy().astype(np.int64) - lo] = np.arange(FIRST_KNOWN_INDEX, FIRST_KNOWN_INDEX + len(values),
                                                                   dtype=np.int32)
        x = pl.col(self.col)
        return (pl.when(x.is_null()).then(pl.lit(PAD_INDEX, pl.Int32))
                .when((x >= lo) & (x <= hi)).then(pl.lit(pl.Series(remap)).gather((x.cast(pl.Int64) - lo).clip(0, hi - lo)))
                .otherwise(pl.lit(OOV_INDEX, pl.Int32)).alias(self.col))


class _Stage:
    """Staged Arrow IPC files, one per split, all with the schema of the first batch."""

    def __init__(self, folder: Path):
        self.folder, self.schema = folder, None
        self.writers: dict[str, ipc.RecordBatchFileWriter] = {}
        self.files: dict[str, Path] = {}

    def write(self, split: str, df: pl.DataFrame) -> None:
        table = df.to_arrow()
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        if split not in self.writers:
            self.files[split] = self.folder / f"{split}.arrow"
            self.writers[split] = ipc.new_file(self.files[split], self.schema,
                                               options=ipc.IpcWriteOptions(compression=STAGE_COMPRESSION))
        self.writers[split].write_table(table)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _stage(recipe: Recipe, folder: Path) -> tuple[dict[str, int], list[dict], _Stage, dict[str, _Dictionary],
                                                  dict[str, _Counter]]:
    """Raw sources -> staged IPC files per split with the transformed columns, string categoricals as ids;
    the train counts of every categorical field are taken on the way."""
    counts = dict.fromkeys(SPLITS, 0)
    inputs: list[dict] = []
    stage = _Stage(folder)
    dicts: dict[str, _Dictionary] | None = None
    counters: dict[str, _Counter] = {}

    def put(split: str, part: pl.DataFrame) -> None:
        stage.write(split, part)
        counts[split] += part.height
        if split == "train":
            for c, d in dicts.items():
                d.count(part[c])
            for c, k in counters.items():
                k.count(part[c])
    prog = _Progress("read")
    pool = cf.ThreadPoolExecutor(max_workers=1)
    try:
        for src in recipe.sources:
            if not src.path.exists():
                raise DataError(f"{src.path}: raw file not found")
            if src.split is not None and src.split not in SPLITS:
                raise DataError(f"{src.path}: split {src.split!r} is not one of {SPLITS}")
            if src.label not in src.types and src.fmt != "parquet":
                src.types = {**src.types, src.label: "float"}
            info: dict = {"file": src.path.name, "split": src.split or "seeded", "bytes": src.path.stat().st_size}
            if src.md5:
                _log(f"  verifying md5 of {src.path.name}")
                verify_checksum(src.path, src.md5, "md5")
                info["md5"] = src.md5
                fut = None
            else:
                fut = pool.submit(file_digest, src.path, "sha256")
            n_src = 0
            for line0, batch in prefetch(read_batches(src, recipe.rows)):
                df = finish_batch(recipe, src, pl.from_arrow(batch, rechunk=False), line0)
                if dicts is None:  # the first batch decides which fields are interned
                    dicts = {f.name: _Dictionary() for f in recipe.fields
                             if f.type == "categorical" and df.schema[f.name] == pl.String}
                    counters = {f.name: _Counter(f.name, df.schema[f.name]) for f in recipe.fields
                                if f.type == "categorical" and f.name not in dicts}
                if dicts:
                    df = df.with_columns([d.encode(c) for c, d in dicts.items()])
                    top = df.select(pl.col(list(dicts)).max()).row(0)
                    for d, m in zip(dicts.values(), top):
                        if m is not None:
                            d.size = max(d.size, m + 1)
                if src.split is None:
                    ids = T.assign_split(n_src, df.height, recipe.split_seed, recipe.split_ratios)
                    for i, k in enumerate(SPLITS):
                        part = df.filter(pl.Series(ids == i))
                        if part.height:
                            put(k, part)
                else:
                    put(src.split, df)
                n_src += df.height
                prog.add(df.height)
            info["rows"] = n_src
            if fut is not None:
                info["sha256"] = fut.result()
            inputs.append(info)
    finally:
        pool.shutdown(wait=True)
        stage.close()
    prog.done()
    if counts["train"] == 0:
        raise DataError(f"dataset {recipe.name!r}: the train split is empty (inputs: "
                        f"{[str(s.path) for s in recipe.sources]})")
    return counts, inputs, stage, dicts or {}, counters


def _staged_batches(path: Path | None, schema: pa.Schema) -> Iterator[pa.Table]:
    """The staged split in tables of exactly ROW_GROUP_ROWS rows (the last one shorter; one empty table if the
    split has no rows), read batch by batch."""
    pending: list[pa.RecordBatch] = []
    n = 0
    if path is not None:
        with ipc.open_file(path) as f:
            for i in range(f.num_record_batches):
                b = f.get_batch(i)
                pending.append(b)
                n += b.num_rows
                while n >= ROW_GROUP_ROWS:
                    t = pa.Table.from_batches(pending, schema)
                    yield t.slice(0, ROW_GROUP_ROWS)
                    rest = t.slice(ROW_GROUP_ROWS)
                    pending, n = rest.to_batches(), rest.num_rows
    if n or path is None:
        yield pa.Table.from_batches(pending, schema)


def _encode_split(path: Path | None, schema: pa.Schema, exprs: list[pl.Expr], label: str, dst: Path) -> dict:
    """Staged split -> final Parquet (lz4, ROW_GROUP_ROWS per row group); returns rows and positives.
    Each row group is written in a thread while the next one is encoded (both release the GIL)."""
    writer = None
    n, pos = 0, 0.0
    pending: cf.Future | None = None
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            for t in _staged_batches(path, schema):
                df = pl.from_arrow(t, rechunk=False).select(exprs)
                n += df.height
                pos += float(df[label].sum() or 0.0)
                out = df.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(dst, out.schema, compression="lz4")
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, out, row_group_size=ROW_GROUP_ROWS)
            if pending is not None:
                pending.result()
        finally:
            if writer is not None:
                if pending is not None:
                    pending.exception()  # wait for it before closing
                writer.close()
    return {"rows": n, "positives": int(pos)}


def build(recipe: Recipe, out: Path, fingerprint: str) -> dict:
    """Write ``{train,valid,test}.parquet``, feature_spec.json and manifest.json into ``out``; return manifest."""
    t0 = time.perf_counter()
    folder = out / "_stage"
    folder.mkdir()
    _, inputs, stage, dicts, counters = _stage(recipe, folder)
    train = pl.scan_ipc(stage.files["train"])

    # vocabularies (train only; counted while staging, sequences here) and sequence lengths
    t1 = time.perf_counter()
    cat = [f for f in recipe.fields if f.type in ("categorical", "sequence")]
    seq = [f for f in cat if f.name not in dicts and f.name not in counters]
    frames = dict(zip([f.name for f in seq], pl.collect_all(
        [T.vocab_query(train, f.name, f.min_count, f.type == "sequence") for f in seq], engine="streaming")
        if seq else []))
    vocabs, remaps, kept = {}, {}, {}  # kept: (value, count) per field in index order, for the vocab files
    for f in cat:
        if f.name in dicts:
            d = dicts[f.name]
            v = d.vocab(f.name, f.min_count)
            remap = np.full(max(d.size, 1), OOV_INDEX, dtype=np.int32)
            remap[v[f.name].to_numpy()] = np.arange(FIRST_KNOWN_INDEX, FIRST_KNOWN_INDEX + v.height, dtype=np.int32)
            vocabs[f.name], remaps[f.name] = v["value"], pl.Series(remap)
            kept[f.name] = v.select("value", "count")
        else:
            v = counters[f.name].vocab(f.min_count) if f.name in counters else frames[f.name]
            vocabs[f.name] = v[f.name]
            kept[f.name] = v.select(pl.col(f.name).alias("value"), "count")
    max_lens = {}
    for f in recipe.fields:
        if f.type == "sequence":
            if f.max_len:
                max_lens[f.name] = int(f.max_len)
            else:
                longest = train.select(pl.col(f.name).list.len().max()).collect().item() or 1
                max_lens[f.name] = max(1, min(int(longest), recipe.max_len_cap))
    _log(f"  vocabularies: {len(cat)} fields in {time.perf_counter() - t1:.1f} s")

    # encode each split, batch by batch
    t2 = time.perf_counter()
    exprs = []
    for f in recipe.fields:
        if f.name in remaps:  # staged id -> index: a gather; missing (null id) -> padding
            exprs.append(pl.lit(remaps[f.name]).gather(pl.col(f.name)).fill_null(PAD_INDEX).alias(f.name))
        elif f.name in counters and (e := counters[f.name].encoder(vocabs[f.name])) is not None:
            exprs.append(e)
        elif f.type == "categorical":
            exprs.append(T.encode_categorical(f.name, vocabs[f.name]))
        elif f.type == "sequence":
            exprs.append(T.encode_sequence(f.name, vocabs[f.name], max_lens[f.name]))
        elif f.type == "numeric":
            exprs.append(T.encode_numeric(f.name))
        else:
            raise DataError(f"field {f.name!r}: type {f.type!r} is not categorical, numeric or sequence")
    exprs.append(pl.col(recipe.label).cast(pl.Float32))

    def encode(k: str) -> dict:
        dst = out / f"{k}.parquet"
        stats = _encode_split(stage.files.get(k), stage.schema, exprs, recipe.label, dst)
        n, pos = stats["rows"], stats["positives"]
        return {"file": dst.name, "rows": n, "positives": pos, "positive_rate": round(pos / n, 6) if n else None,
                "bytes": dst.stat().st_size, "sha256": file_digest(dst, "sha256")}

    # train here, valid and test meanwhile in a thread: the cores stay busy while one writer works alone
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        rest = pool.submit(lambda: {k: encode(k) for k in SPLITS[1:]})
        try:
            first = encode(SPLITS[0])
        finally:
            rest.exception()  # wait for it before anything is cleaned up
        splits = {SPLITS[0]: first, **rest.result()}
    _log(f"  encode + write: {time.perf_counter() - t2:.1f} s")
    del train, dicts
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()

    features = tuple(
        Feature(
            name=f.name, type=f.type,
            vocab_size=(len(vocabs[f.name]) + FIRST_KNOWN_INDEX) if f.name in vocabs else 0,
            max_len=max_lens.get(f.name, 0),
            min_count=f.min_count if f.type != "numeric" else DEFAULT_MIN_COUNT,
            source=f.source,
        )
        for f in recipe.fields
    )
    spec = FeatureSpec(dataset=recipe.name, label=recipe.label, features=features,
                       notes={"official_split": recipe.official_split, "layout": recipe.layout, **recipe.notes})
    spec.save(out / SPEC)
    from bars import __version__ as bars_version

    manifest = {
        "bars_version": bars_version,
        "format": FORMAT_VERSION,
        "dataset": recipe.name,
        "fingerprint": fingerprint,
        "config": recipe.fingerprint_payload(),
        "layout": recipe.layout,
        "official_split": recipe.official_split,
        "split": ("official split files" if not recipe.seeded_split else
                  f"seeded per-row assignment, ratios {list(recipe.split_ratios)}, seed {recipe.split_seed}"
                  + ("" if recipe.official_split else " (not the official split)")),
        "inputs": inputs,
        "splits": splits,
        MANIFEST_KEY: write_vocabularies(out, kept, [f.name for f in recipe.fields]),
        "feature_spec_sha256": file_digest(out / SPEC, "sha256"),
        "seconds": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / MANIFEST, manifest)
    return manifest
