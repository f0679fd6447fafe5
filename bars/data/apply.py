"""New raw rows -> encoded tensors, exactly as a prepared dataset's splits were encoded (``bars predict``).

The preprocessing is the one ``bars prepare`` ran, never a re-fit: rows are read by the same reader
(``bars.data.sources.read_batches``: the column types the dataset's recipe declares, file:line errors), go
through the same recipe transform and label check (``bars.data.engine.finish_batch``), and are encoded with the
vocabularies fitted on train that the prepared folder keeps (``bars.data.vocab``) by the encoders of
``bars.data.transforms``: a value not in its field's vocabulary (never seen in train, or rarer than min_count) is
OOV (index 1), a missing value gets the index the folder's missing rule gave it (manifest ``missing``: oov -> 1,
padding -> 0; a folder prepared before the rule existed: padding), sequences are cut or padded to the spec's ``max_len``,
numeric fields are cast as in training. The result is byte-for-byte what the split files hold for the same rows.

A new file is CSV/TSV (plain or gzip; with a header naming the dataset's raw columns in any order, or without one
when the dataset's raw files have none: then its columns are the raw columns, the label column optional) or
Parquet. It holds the raw columns the recipe reads (the label optional) and may hold more (ids to keep beside the
scores). A missing column or a value of the wrong type stops with the file, line (row) and what was expected.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bars.data import transforms as T
from bars.data.engine import Recipe, finish_batch
from bars.data.errors import DataError
from bars.data.loader import SplitTensors, split_from_table
from bars.data.sources import ARROW_TYPES, Source, open_text, read_batches, resolve_columns
from bars.data.spec import FeatureSpec
from bars.data.vocab import load_vocabularies
from bars.data.writer import MANIFEST, SPEC

SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".parquet": None}
_KIND = {"int": "an integer", "float": "a number", "str": "a string"}


@dataclass(frozen=True)
class RawLayout:
    """The raw columns the dataset's recipe reads, in its files' order, with their Arrow types."""

    dataset: str
    columns: tuple[str, ...]
    types: dict[str, pa.DataType]
    label: str
    header: bool
    labels: tuple[str, ...] = ()  # every raw label column (several for a multi-task dataset; default: (label,))

    def __post_init__(self) -> None:
        if not self.labels:
            object.__setattr__(self, "labels", (self.label,))

    @property
    def required(self) -> list[str]:
        return [c for c in self.columns if c not in self.labels]

    def describe(self) -> str:
        what = (f"label {self.label!r}" if len(self.labels) == 1 else
                "labels " + ", ".join(repr(c) for c in self.labels))
        return f"{', '.join(self.required)} ({what} optional)"


def _kind(t: pa.DataType) -> str:
    return "int" if pa.types.is_integer(t) else "float" if pa.types.is_floating(t) else "str"


def training_layout(recipe: Recipe) -> RawLayout:
    """What the recipe's raw source reads (the test split's file when the splits have files of their own)."""
    sources = recipe.sources
    src = next((s for s in sources if s.split == "test"), sources[0])
    names = resolve_columns(src)
    if src.fmt == "parquet":
        schema = pq.ParquetFile(src.path).schema_arrow
        types = {c: schema.field(c).type for c in names}
    elif src.fmt == "libsvm":
        types = dict.fromkeys(names, pa.string())
    else:
        kinds = {**src.types}
        if src.label not in kinds:
            kinds[src.label] = "float"  # as the engine reads a CSV label
        types = {c: ARROW_TYPES[kinds.get(c, "str")] for c in names}
    labels = tuple(dict.fromkeys([src.label] + [c for c in recipe.label_columns if c in names]))
    return RawLayout(recipe.name, tuple(names), types, src.label, src.header, labels)


@dataclass(frozen=True)
class RawFile:
    """A new file to encode: how to read it, and whether it holds the label (``labels``: which of the dataset's
    label columns it holds)."""

    source: Source
    columns: tuple[str, ...]
    keep: tuple[str, ...]
    has_label: bool
    labels: tuple[str, ...] = ()


def open_raw(path: str | Path, layout: RawLayout, keep: Sequence[str] = (), sep: str | None = None) -> RawFile:
    """Check a new file against the dataset's raw layout: format, header (or its absence), columns, kept columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    name = path.name.removesuffix(".gz")
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: cannot tell the format from the name: expected a file ending "
                        f"{', '.join(SUFFIXES)} (CSV/TSV may be gzip-compressed: .csv.gz ...)")
    kinds = {c: _kind(t) for c, t in layout.types.items()}
    if suffix == ".parquet":
        columns = tuple(pq.ParquetFile(path).schema_arrow.names)
        src = Source(path, fmt="parquet", label=layout.label)
        header = True
    else:
        sep = sep or SUFFIXES[suffix]
        src = Source(path, fmt="csv", sep=sep, header=True, label=layout.label)
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty: expected rows with the columns {layout.describe()}")
        with open_text(path) as f:
            first = next(csv.reader([f.readline().rstrip("\r\n")], delimiter=sep), [])
        first = [c.strip() for c in first]
        header = set(layout.required) <= set(first)
        if header:
            columns = tuple(first)
        elif not layout.header and len(first) in (len(layout.columns), len(layout.required)):
            columns = layout.columns if len(first) == len(layout.columns) else tuple(layout.required)
            src.header, src.columns = False, list(columns)
        else:
            missing = [c for c in layout.required if c not in first]
            raise DataError(
                f"{path}:1: " + (f"header lacks columns {missing}" if layout.header else
                                 f"{len(first)} columns and no header naming {missing}")
                + f": expected the raw columns of {layout.dataset}: {layout.describe()}, in any order, with a "
                "header line" + ("" if layout.header else f" (or, without one, exactly the {len(layout.columns)} "
                                 f"raw columns or the {len(layout.required)} without the label, in that order)")
                + f"; separator {sep!r}")
        src.types = {c: kinds[c] for c in layout.columns if c in columns}
    if header:
        missing = [c for c in layout.required if c not in columns]
        if missing:
            raise DataError(f"{path}: columns {missing} not found; expected the raw columns of {layout.dataset}: "
                            f"{layout.describe()}; the file has {list(columns)}")
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise DataError(f"{path}: duplicate columns {dup}")
    bad_keep = [c for c in keep if c not in columns]
    if bad_keep:
        raise DataError(f"keep={','.join(keep)}: columns {bad_keep} are not in {path} (its columns: {list(columns)})")
    return RawFile(src, columns, tuple(keep), layout.label in columns, tuple(c for c in layout.labels if c in columns))


class RawEncoder:
    """Encodes raw rows of a dataset with what its prepared folder recorded: spec, vocabularies, recipe."""

    def __init__(self, recipe: Recipe, folder: str | Path, *, verify: bool = True) -> None:
        self.recipe, self.folder = recipe, Path(folder)
        self.spec = FeatureSpec.load(self.folder / SPEC)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.vocabs = load_vocabularies(self.folder, self.manifest, self.spec, verify=verify)
        self.layout = training_layout(recipe)
        names = [f.name for f in recipe.fields if f.type != "meta"]
        if names != self.spec.names:
            raise DataError(f"{self.folder}: the recipe of {recipe.name} declares fields {names}, the prepared "
                            f"feature spec has {self.spec.names}: the recipe changed since the folder was prepared")
        self.exprs = []
        missing = str(self.manifest.get("missing", "padding"))
        for f in self.spec.features:
            if f.type == "categorical":
                self.exprs.append(T.encode_categorical(f.name, self.vocabs[f.name], missing=missing))
            elif f.type == "sequence":
                self.exprs.append(T.encode_sequence(f.name, self.vocabs[f.name], f.max_len, f.padding))
            else:
                self.exprs.append(T.encode_numeric(f.name))
        self.exprs += [pl.col(c).cast(pl.Float32) for c in self.spec.labels]

    def open(self, path: str | Path, keep: Sequence[str] = (), sep: str | None = None) -> RawFile:
        return open_raw(path, self.layout, keep, sep)

    def batches(self, raw: RawFile) -> Iterator[tuple[int, SplitTensors, pa.Table]]:
        """``(first line or row, encoded rows, kept columns)`` per block of the file, in file order. The label
        of a row without one is NaN."""
        for line0, batch in read_batches(raw.source):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            kept = table.select(list(raw.keep))
            df = self._raw_frame(raw, table, line0)
            yield line0, self.encode(raw.source, df, line0), kept

    def _raw_frame(self, raw: RawFile, table: pa.Table, line0: int) -> pl.DataFrame:
        """The raw columns in the training files' order and types (a missing label column: all missing)."""
        cols = []
        for c in self.layout.columns:
            want = self.layout.types[c]
            if c not in raw.columns:  # only label columns may be absent (open_raw checked the rest)
                cols.append(pl.Series(c, [None] * table.num_rows).cast(pl.from_arrow(pa.array([], want)).dtype))
                continue
            col = table.column(c)
            if col.type != want:
                col = self._cast(raw, c, col, want, line0)
            cols.append(pl.from_arrow(col).alias(c))
        return pl.DataFrame(cols)

    def _cast(self, raw: RawFile, c: str, col: pa.ChunkedArray, want: pa.DataType, line0: int) -> pa.ChunkedArray:
        s = pl.from_arrow(col)
        target = pl.from_arrow(pa.array([], want)).dtype
        got = s.cast(target, strict=False)
        bad = got.is_null() & s.is_not_null()
        if bad.any():
            i = int(bad.arg_max())
            where = f"{raw.source.path}: row {line0 + i}" if raw.source.fmt == "parquet" else \
                f"{raw.source.path}:{line0 + i}"
            raise DataError(f"{where}: column {c!r}: expected {_KIND[_kind(want)]} ({want}), got {s[i]!r}")
        return got.to_arrow()

    def encode(self, src: Source, df: pl.DataFrame, line0: int) -> SplitTensors:
        """Raw rows (the layout's columns) -> tensors, through the recipe's transform and the fitted vocabularies."""
        df = finish_batch(self.recipe, src, df, line0, label_required=False)
        self._check_dtypes(src, df)
        # meta columns (e.g. gAUC's group id): integers as they are, text hashed (grouping is all they serve)
        meta = [pl.col(c).hash().reinterpret(signed=True) if df.schema[c] == pl.String else pl.col(c).cast(pl.Int64)
                for c in self.spec.meta]
        table = df.select(self.exprs + meta).to_arrow()
        return split_from_table(table, self.spec, str(src.path))

    def _check_dtypes(self, src: Source, df: pl.DataFrame) -> None:
        for f in self.spec.features:
            if f.type == "numeric":
                continue
            want = self.vocabs[f.name].dtype
            got = df.schema[f.name]
            got = got.inner if f.type == "sequence" and isinstance(got, pl.List) else got
            if got != want and want != pl.Null and len(self.vocabs[f.name]):
                raise DataError(f"{src.path}: field {f.name!r} is {got} after the {self.recipe.name} transform, but "
                                f"its vocabulary holds {want} values: the raw column types differ from the "
                                f"dataset's ({self.layout.describe()})")


def label_present(label: np.ndarray) -> bool:
    """Every row has a label (no NaN): metrics can be computed."""
    return bool(len(label)) and not bool(np.isnan(label).any())
