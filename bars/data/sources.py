"""Reading raw inputs in bounded batches: CSV/TSV (plain or gzip), libsvm-style one-hot files and Parquet.

Fast path: pyarrow's streaming CSV reader with the expected column types. When it fails (wrong column count,
a non-numeric value in an integer field, a truncated gzip, ...), :func:`diagnose` re-reads the file line by line
in Python to name the first bad line and what was expected, so errors carry file:line without slowing the
common case. "line" is the 1-based physical line in the (decompressed) file, header included.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bars.data.errors import DataError
from bars.fileio import file_digest, is_gzip

BLOCK_SIZE = 1 << 20  # bytes of CSV text per parse block: small blocks stay in cache and parse fastest
BATCH_ROWS = 1 << 16  # parsed blocks are combined into batches of at least this many rows (less per-batch cost)


@dataclass
class Source:
    """One raw input file and how to read it.

    ``columns``: the column names in file order (required when ``header`` is false; checked against the header
    line otherwise). ``types``: column -> "int" | "float" | "str" (default "str"); int/float columns are parsed
    and validated, empty -> missing. ``split``: "train" / "valid" / "test", or None to assign rows by the
    recipe's seeded ratios. ``fmt``: "csv" (any single-char ``sep``), "libsvm" (space separated ``id:value``
    tokens whose id becomes the field value) or "parquet". ``md5``: verified before use when given.
    """

    path: Path
    split: str | None = None
    fmt: str = "csv"
    sep: str = ","
    header: bool = True
    columns: list[str] | None = None
    types: dict[str, str] = field(default_factory=dict)
    md5: str | None = None
    label: str = "label"
    member: str | None = None  # read this member of a zip archive at ``path``

    def __post_init__(self) -> None:
        self.path = Path(self.path)


def open_text(path: Path, member: str | None = None) -> io.TextIOBase:
    if member is not None:
        return io.TextIOWrapper(zipfile.ZipFile(path).open(member), encoding="utf-8", newline="")
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def verify_checksum(path: Path, expected: str, algo: str = "md5", content: bool = True) -> None:
    """Raise DataError unless the digest matches (of the decompressed content for gzip files by default,
    so ``train.csv`` and ``train.csv.gz`` both verify against the published md5 of ``train.csv``)."""
    try:
        got = file_digest(path, algo, content=content)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: cannot checksum ({e}); truncated or corrupt file?") from None
    if got.lower() != expected.lower():
        raise DataError(
            f"{path}: {algo} checksum mismatch: expected {expected}, got {got} "
            "(wrong, corrupted or incomplete file; remove it and download or copy it again)"
        )


def _first_line(src: Source) -> str:
    try:
        with open_text(src.path, src.member) as f:
            line = f.readline()
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{src.path}: cannot read the first line ({e}); truncated or corrupt gzip?") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{src.path}:1: not UTF-8 text ({e})") from None
    return line


def resolve_columns(src: Source) -> list[str]:
    """Column names in file order; checks the header against ``src.columns`` when both exist."""
    if src.fmt == "parquet":
        try:
            names = pq.ParquetFile(src.path).schema_arrow.names
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{src.path}: not a readable Parquet file ({e}); expected a Parquet file as written by "
                            "pyarrow/polars (footer and schema intact)") from None
        if src.columns:
            missing = [c for c in src.columns if c not in names]
            if missing:
                raise DataError(f"{src.path}: missing columns {missing}; the file has {names}")
        return list(names)
    if src.member is None and src.path.stat().st_size == 0:
        raise DataError(f"{src.path}: the file is empty: expected " + (
            "a header line and data rows" if src.header else "data rows"))
    line = _first_line(src)
    if not line.strip():
        raise DataError(f"{src.path}:1: empty first line: expected " + ("a header line" if src.header else "a data row"))
    if src.header:
        names = next(csv.reader([line.rstrip("\r\n")], delimiter=src.sep))
        names = [n.strip() for n in names]
        if src.columns and names != list(src.columns):
            raise DataError(
                f"{src.path}:1: header has {len(names)} columns {names}; expected {len(src.columns)} columns "
                f"{list(src.columns)}"
            )
        return names
    if not src.columns:
        raise DataError(f"{src.path}: a file without a header needs its column names in the config")
    return list(src.columns)


ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}


def read_batches(src: Source, rows: int | None = None) -> Iterator[tuple[int, pa.RecordBatch | pa.Table]]:
    """Yield ``(first_line_number, batch)`` of the raw columns, validated; at most ``rows`` rows in all."""
    names = resolve_columns(src)
    done = 0
    if src.fmt == "parquet":
        try:
            for b in pq.ParquetFile(src.path).iter_batches(batch_size=1 << 20):
                if rows is not None and done + b.num_rows > rows:
                    b = b.slice(0, rows - done)
                yield done + 1, b
                done += b.num_rows
                if rows is not None and done >= rows:
                    return
        except (pa.ArrowException, OSError) as e:  # truncated or damaged: name the file and the row reached
            raise DataError(f"{src.path}: not a complete Parquet file (read {done:,} rows, then: {e}); "
                            "expected a Parquet file as written by pyarrow/polars") from None
        if done == 0:
            raise DataError(f"{src.path}: no data rows")
        return
    with contextlib.ExitStack() as files:  # the raw file (or zip member) is closed however reading ends
        try:
            if src.member is not None:
                zf = files.enter_context(zipfile.ZipFile(src.path))
                stream = files.enter_context(pa.PythonFile(zf.open(src.member), mode="r"))
            else:
                compression = "gzip" if is_gzip(src.path) else None
                stream = files.enter_context(
                    pa.input_stream(str(src.path), compression=compression, buffer_size=1 << 20))
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    column_names=names, skip_rows=1 if src.header else 0, block_size=BLOCK_SIZE
                ),
                parse_options=parse_options(src),
                convert_options=convert_options(src, names),
            )
            header_lines = 1 if src.header else 0
            for b in _combined(reader, rows):
                yield done + 1 + header_lines, b
                done += b.num_rows
        except DataError:
            raise
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
            diagnose(src, names, e, rows)
    if done == 0:
        raise no_rows(src)


def parse_options(src: Source) -> pacsv.ParseOptions:
    """How a delimited source is split into fields (the native reader's pyarrow blocks use it too)."""
    return pacsv.ParseOptions(delimiter=" " if src.fmt == "libsvm" else src.sep)


def convert_options(src: Source, names: list[str]) -> pacsv.ConvertOptions:
    """The column types and null rules a delimited source is read with (also by the native reader's blocks)."""
    types = {c: pa.string() if src.fmt == "libsvm" else ARROW_TYPES[src.types.get(c, "str")] for c in names}
    return pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=True)


def no_rows(src: Source) -> DataError:
    return DataError(f"{src.path}: no data rows (expected at least one row after the header)"
                     if src.header else f"{src.path}: no data rows")


def _combined(reader: Iterator[pa.RecordBatch], rows: int | None) -> Iterator[pa.Table]:
    """Tables of at least BATCH_ROWS rows (the last may be shorter) from the reader's blocks; ``rows`` in all.
    Each is one contiguous chunk per column: polars works on those several times faster than on many chunks."""
    pending: list[pa.RecordBatch] = []
    n_pending = n_all = 0
    for b in reader:
        if rows is not None and n_all + b.num_rows > rows:
            b = b.slice(0, rows - n_all)
        pending.append(b)
        n_pending += b.num_rows
        n_all += b.num_rows
        if rows is not None and n_all >= rows:
            break
        if n_pending >= BATCH_ROWS:
            yield pa.Table.from_batches(pending).combine_chunks()
            pending, n_pending = [], 0
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks()


def _check_value(kind: str, v: str) -> bool:
    if v == "":
        return True
    try:
        if kind == "int":
            int(v)
        else:
            float(v)
    except ValueError:
        return False
    return True


def diagnose(src: Source, names: list[str], err: Exception, rows: int | None = None) -> None:
    """Find the first bad line of ``src`` and raise a DataError naming it; re-raise ``err`` otherwise."""
    sep = " " if src.fmt == "libsvm" else src.sep
    lineno = 0
    try:
        with open_text(src.path, src.member) as f:
            reader = csv.reader(f, delimiter=sep)
            for lineno, fields in enumerate(reader, start=1):
                if lineno == 1 and src.header:
                    continue
                if len(fields) != len(names):
                    raise DataError(
                        f"{src.path}:{lineno}: found {len(fields)} columns, expected {len(names)} "
                        f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}; separator {sep!r})"
                    )
                for c, v in zip(names, fields):
                    kind = src.types.get(c, "str")
                    if kind != "str" and not _check_value(kind, v.strip()):
                        what = "an integer" if kind == "int" else "a number"
                        raise DataError(f"{src.path}:{lineno}: column {c!r}: expected {what} or empty, got {v!r}")
                if rows is not None and lineno - (1 if src.header else 0) >= rows:
                    break
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(
            f"{src.path}: compressed data is truncated or corrupt after line {lineno} ({e}); "
            "expected a complete gzip file"
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"{src.path}:{lineno + 1}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{src.path}:{lineno + 1}: malformed CSV ({e})") from None
    raise DataError(f"{src.path}: could not be parsed ({err})") from err
