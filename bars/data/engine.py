"""The preprocessing engine every dataset uses: raw batches -> staged Parquet -> vocabularies -> encoded splits.

A dataset is a :class:`Recipe` (sources + fields + an optional per-batch row transform); ``datasets/<name>/
prepare.py`` only declares one. The ``tabular`` dataset builds its recipe from config keys with
:func:`tabular_recipe`; the named BARS datasets add their protocol transforms (bucketing, time fields) on top.

Memory stays bounded: raw files are read in blocks (pyarrow streaming CSV), each block is transformed and
appended to a staged Parquet file per split; vocabularies are counted by polars over the staged train file;
encoding streams staged -> final Parquet with polars' streaming engine.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bars.data import transforms as T
from bars.data.errors import DataError
from bars.data.sources import Source, file_digest, read_batches, verify_checksum
from bars.data.spec import FIRST_KNOWN_INDEX, Feature, FeatureSpec
from bars.data.writer import MANIFEST, SPEC, sha256_file, write_json

FORMAT_VERSION = 1  # bump when the engine's output for the same config changes
SPLITS = T.SPLITS


@dataclass
class Field:
    """One output feature. ``max_len`` (sequence): None = longest sequence in train, capped at ``max_len_cap``."""

    name: str
    type: str = "categorical"
    min_count: int = 1
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


def _finish_batch(recipe: Recipe, src: Source, df: pl.DataFrame, line0: int) -> pl.DataFrame:
    """Apply the recipe's transform, split sequences, select and check the label (0/1, never missing)."""
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
    bad = lab.is_null() | ~lab.is_in([0.0, 1.0])
    if bad.any():
        i = int(bad.arg_max())
        raw = df[recipe.label][i]
        where = f"{src.path}:{line0 + i}" if src.fmt != "parquet" else f"{src.path}: row {line0 + i}"
        raise DataError(f"{where}: label {recipe.label!r} is {raw!r}: expected 0 or 1")
    return df.select(*exprs, lab.cast(pl.Float32).alias(recipe.label))


def _prefetch(it, depth: int = 2):
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
        except BaseException as e:  # handed to the consumer
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


def _stage(recipe: Recipe, stage: Path) -> tuple[dict[str, int], list[dict], list[Path]]:
    """Raw sources -> staged Parquet files with the transformed columns and a ``__split`` id column."""
    counts = dict.fromkeys(SPLITS, 0)
    inputs: list[dict] = []
    files: list[Path] = []
    prog = _Progress("read")
    pool = cf.ThreadPoolExecutor(max_workers=1)
    schema: pa.Schema | None = None
    try:
        for si, src in enumerate(recipe.sources):
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
            dst = stage / f"part{si}.parquet"
            writer = None
            try:
                for line0, batch in _prefetch(read_batches(src, recipe.rows)):
                    df = _finish_batch(recipe, src, pl.from_arrow(batch), line0)
                    if src.split is None:
                        ids = T.assign_split(n_src, df.height, recipe.split_seed, recipe.split_ratios)
                    else:
                        ids = np.full(df.height, SPLITS.index(src.split), dtype=np.uint8)
                    for i, c in enumerate(np.bincount(ids, minlength=3)):
                        counts[SPLITS[i]] += int(c)
                    table = df.with_columns(pl.Series("__split", ids)).to_arrow()
                    if schema is None:
                        schema = table.schema
                    elif table.schema != schema:
                        table = table.cast(schema)
                    if writer is None:
                        writer = pq.ParquetWriter(dst, schema, compression="lz4")
                    writer.write_table(table)
                    n_src += df.height
                    prog.add(df.height)
            finally:
                if writer is not None:
                    writer.close()
            if writer is not None:
                files.append(dst)
            info["rows"] = n_src
            if fut is not None:
                info["sha256"] = fut.result()
            inputs.append(info)
    finally:
        pool.shutdown(wait=True)
    prog.done()
    if counts["train"] == 0:
        raise DataError(f"dataset {recipe.name!r}: the train split is empty (inputs: "
                        f"{[str(s.path) for s in recipe.sources]})")
    return counts, inputs, files


def build(recipe: Recipe, out: Path, fingerprint: str) -> dict:
    """Write ``{train,valid,test}.parquet``, feature_spec.json and manifest.json into ``out``; return manifest."""
    t0 = time.perf_counter()
    stage = out / "_stage"
    stage.mkdir()
    counts, inputs, staged = _stage(recipe, stage)
    train = pl.scan_parquet(staged).filter(pl.col("__split") == 0)

    # vocabularies (train only) and sequence lengths
    t1 = time.perf_counter()
    cat = [f for f in recipe.fields if f.type in ("categorical", "sequence")]
    vocab_frames = pl.collect_all(
        [T.vocab_query(train, f.name, f.min_count, f.type == "sequence") for f in cat], engine="streaming"
    )
    vocabs = {f.name: v[f.name] for f, v in zip(cat, vocab_frames)}
    max_lens = {}
    for f in recipe.fields:
        if f.type == "sequence":
            if f.max_len:
                max_lens[f.name] = int(f.max_len)
            else:
                longest = train.select(pl.col(f.name).list.len().max()).collect().item() or 1
                max_lens[f.name] = max(1, min(int(longest), recipe.max_len_cap))
    _log(f"  vocabularies: {len(cat)} fields in {time.perf_counter() - t1:.1f} s")

    # encode each split (streaming)
    t2 = time.perf_counter()
    exprs = []
    for f in recipe.fields:
        if f.type == "categorical":
            exprs.append(T.encode_categorical(f.name, vocabs[f.name]))
        elif f.type == "sequence":
            exprs.append(T.encode_sequence(f.name, vocabs[f.name], max_lens[f.name]))
        elif f.type == "numeric":
            exprs.append(T.encode_numeric(f.name))
        else:
            raise DataError(f"field {f.name!r}: type {f.type!r} is not categorical, numeric or sequence")
    exprs.append(pl.col(recipe.label).cast(pl.Float32))
    splits = {}
    for i, k in enumerate(SPLITS):
        dst = out / f"{k}.parquet"
        pl.scan_parquet(staged).filter(pl.col("__split") == i).select(exprs).sink_parquet(
            dst, compression="lz4", row_group_size=256 * 1024
        )
        stats = pl.scan_parquet(dst).select(pl.len(), pl.col(recipe.label).sum()).collect()
        n, pos = int(stats.item(0, 0)), float(stats.item(0, 1) or 0.0)
        splits[k] = {"file": dst.name, "rows": n, "positives": int(pos),
                     "positive_rate": round(pos / n, 6) if n else None,
                     "bytes": dst.stat().st_size, "sha256": sha256_file(dst)}
    _log(f"  encode + write: {time.perf_counter() - t2:.1f} s")
    for p in stage.iterdir():
        p.unlink()
    stage.rmdir()

    features = tuple(
        Feature(
            name=f.name, type=f.type,
            vocab_size=(len(vocabs[f.name]) + FIRST_KNOWN_INDEX) if f.name in vocabs else 0,
            max_len=max_lens.get(f.name, 0),
            min_count=f.min_count if f.type != "numeric" else 1,
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
        "feature_spec_sha256": sha256_file(out / SPEC),
        "seconds": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


# -- the tabular recipe: a user's own files described in the data config --------------------------------
def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, str):
        return [s for s in x.split(",") if s]
    return list(x)


def tabular_recipe(data: dict, raw_dir: Path, name: str | None = None) -> Recipe:
    """A recipe from config keys (see conf/data/tabular.yaml): files, label, categorical/numeric/sequence."""
    name = name or data["name"]
    label = data.get("label") or "label"
    cats, nums, seqs = (_as_list(data.get(k)) for k in ("categorical", "numeric", "sequence"))
    if not (cats or nums or seqs):
        raise DataError(f"data={name}: no features: set data.categorical=[...], data.numeric=[...] and/or "
                        "data.sequence=[...] (column names)")
    opts = data.get("field_options") or {}
    unknown = set(opts) - set(cats + nums + seqs)
    if unknown:
        raise DataError(f"data.field_options: unknown fields {sorted(unknown)}; features are {cats + nums + seqs}")
    min_count = int(data.get("min_count", 1))
    fields = []
    for kind, cols in (("categorical", cats), ("numeric", nums), ("sequence", seqs)):
        for c in cols:
            o = dict(opts.get(c) or {})
            bad = set(o) - {"min_count", "max_len", "sep"}
            if bad:
                raise DataError(f"data.field_options.{c}: unknown keys {sorted(bad)}; allowed min_count, max_len, sep")
            fields.append(Field(c, kind, min_count=int(o.get("min_count", min_count)),
                                max_len=o.get("max_len", data.get("max_len")),
                                sep=o.get("sep", data.get("sequence_sep", "|")), source=f"column {c}"))

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(raw_dir) / q

    def source(p: str, split: str | None) -> Source:
        path = resolve(p)
        fmt = data.get("format") or "auto"
        if fmt == "auto":
            fmt = "parquet" if path.suffix == ".parquet" else "csv"
        sep = data.get("sep") or ("\t" if path.suffix in (".tsv", ".txt") else ",")
        types = {c: "float" for c in nums}
        cols = _as_list(data.get("columns")) or None
        return Source(path, split=split, fmt=fmt, sep=sep, header=bool(data.get("header", True)),
                      columns=cols, types=types, label=label)

    files = data.get("files") or {}
    if data.get("file"):
        sources = [source(data["file"], None)]
    elif files.get("train"):
        sources = [source(files[k], k) for k in SPLITS if files.get(k)]
        missing = [k for k in SPLITS if not files.get(k)]
        if missing:
            raise DataError(f"data.files: no file for {missing}; give train, valid and test files, or one "
                            "data.file=... with data.split_ratios")
    else:
        raise DataError(f"data={name}: no input: set data.file=<one file> (split by data.split_ratios) or "
                        "data.files.train/valid/test=<files> (CSV or Parquet; relative to data.raw_dir)")
    ratios = tuple(float(r) for r in data.get("split_ratios") or (0.8, 0.1, 0.1))
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise DataError(f"data.split_ratios: expected three non-negative numbers (train, valid, test), got {ratios}")
    return Recipe(name=name, sources=sources, fields=fields, label=label, split_ratios=ratios,
                  split_seed=int(data.get("split_seed", 2021)), rows=data.get("rows"),
                  params=data, layout="tabular", official_split=bool(data.get("official_split", False)))
