"""Bad input by fuzzing: the raw readers (``bars.data.sources.read_batches``) on CSV, TSV, libsvm-style and
Parquet files, plain and gzip, after random truncation, random bytes, a wrong encoding, huge fields and mixed
line ends. Each case either parses to exactly what its bytes say (every data line a row, nothing dropped: the
clean rows where the damage cannot change them) or stops with a :class:`DataError` that starts with the file's
path (and, for text, the line and what was expected). Any other exception fails the test.

Hypothesis runs derandomized (seeded), ``BARS_FUZZ_EXAMPLES`` cases per format (default 40; ``make
bench-reliability`` runs 10,000).
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bars.data.errors import DataError
from bars.data.sources import Source, read_batches

EXAMPLES = int(os.environ.get("BARS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
NAMES = ["label", "count", "price", "item"]
TYPES = {"label": "int", "count": "int", "price": "float"}
FORMATS = {"csv": ",", "tsv": "\t", "libsvm": " "}

ROW = st.tuples(st.integers(0, 1), st.one_of(st.none(), st.integers(-10**12, 10**12)),
                st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32)),
                st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:_-é", min_size=1, max_size=8))
DAMAGE = st.sampled_from(["none", "truncate", "bytes", "latin1", "huge", "line_ends", "blank_lines"])


def _cell(v) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _text(rows, sep: str, fmt: str) -> str:
    head = [] if fmt == "libsvm" else [sep.join(NAMES)]
    return "\n".join(head + [sep.join(_cell(v) for v in r) for r in rows]) + "\n"


def _source(path: Path, fmt: str) -> Source:
    if fmt == "libsvm":
        return Source(path, fmt="libsvm", header=False, columns=NAMES)
    return Source(path, sep=FORMATS[fmt], types=TYPES)


def _read(src: Source) -> pa.Table | None:
    try:
        tables = [b for _, b in read_batches(src)]
    except DataError as e:
        assert str(e).startswith(str(src.path)), f"the error does not name the file: {e}"
        return None
    return pa.concat_tables([pa.table(t) if not isinstance(t, pa.Table) else t for t in tables])


def _lines(data: bytes, header: bool) -> list[bytes]:
    """The data lines a reader must return: physical lines (\\n, \\r\\n or \\r), empty ones skipped."""
    lines = [ln for ln in re.split(rb"\r\n|\n|\r", data) if ln != b""]
    return lines[1:] if header else lines


def _damage(clean: bytes, how: str, data) -> bytes:
    if how == "truncate":
        return clean[:data.draw(st.integers(0, len(clean)), label="cut")]
    if how == "bytes":
        out = bytearray(clean)
        for _ in range(data.draw(st.integers(1, 4), label="n_bytes")):
            at = data.draw(st.integers(0, len(out)), label="at")
            out[at:at] = data.draw(st.binary(min_size=1, max_size=3), label="junk")
        return bytes(out)
    if how == "latin1":
        return clean.decode("utf-8").encode("latin-1", errors="replace")
    if how == "huge":
        lines = clean.split(b"\n")
        at = data.draw(st.integers(1 if len(lines) > 1 else 0, len(lines) - 1), label="line")
        lines[at] = lines[at] + b"x" * data.draw(st.sampled_from([70_000, 1_100_000]), label="size")
        return b"\n".join(lines)
    if how == "line_ends":
        return b"".join(ln + data.draw(st.sampled_from([b"\n", b"\r\n"]), label="end")
                        for ln in clean.split(b"\n")[:-1])
    if how == "blank_lines":
        return clean.replace(b"\n", b"\n\n", data.draw(st.integers(1, 3), label="n_blank"))
    return clean


def _check_text(tmp_path: Path, fmt: str, rows, how: str, gz: bool, data) -> None:
    clean = _text(rows, FORMATS[fmt], fmt).encode()
    raw = _damage(clean, how, data)
    path = tmp_path / f"in.{fmt}{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    if gz and how == "truncate":  # damage the compressed stream instead
        packed = gzip.compress(clean, mtime=0)
        path.write_bytes(packed[:data.draw(st.integers(0, len(packed) - 1), label="gz_cut")])
    src = _source(path, fmt)
    got = _read(src)
    header = fmt != "libsvm"
    if how in ("none", "line_ends", "blank_lines"):  # the same rows as the clean file, nothing dropped
        assert got is not None, "a clean file was refused"
        want = _read(_write_clean(tmp_path, clean, fmt))
        assert got.equals(want)
        assert got.num_rows == len(rows)
    if got is None:
        return
    if gz and how == "truncate":
        pytest.fail(f"a truncated gzip stream parsed without error ({got.num_rows} rows)")
    # nothing silently dropped: one row per non-empty data line
    assert got.num_rows == len(_lines(raw, header)), (got.num_rows, len(_lines(raw, header)))


def _write_clean(tmp_path: Path, clean: bytes, fmt: str) -> Source:
    p = tmp_path / f"clean.{fmt}"
    p.write_bytes(clean)
    return _source(p, fmt)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_fuzzed_text_files(tmp_path_factory, fmt, gz):
    @FUZZ
    @given(rows=st.lists(ROW, min_size=1, max_size=30), how=DAMAGE, data=st.data())
    def case(rows, how, data):
        _check_text(tmp_path_factory.mktemp("fz"), fmt, rows, how, gz, data)

    case()


def test_fuzzed_parquet(tmp_path_factory):
    @FUZZ
    @given(rows=st.lists(ROW, min_size=1, max_size=30), how=st.sampled_from(["none", "truncate", "bytes"]),
           data=st.data())
    def case(rows, how, data):
        d = tmp_path_factory.mktemp("pq")
        table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(NAMES)})
        clean = d / "clean.parquet"
        pq.write_table(table, clean)
        raw = _damage(clean.read_bytes(), how, data)
        path = d / "in.parquet"
        path.write_bytes(raw)
        got = _read(Source(path, fmt="parquet"))
        if how == "none":
            assert got is not None and got.equals(table)
        if got is not None:  # parsed: every row the footer promises, none dropped
            assert got.num_rows == pq.ParquetFile(path).metadata.num_rows

    case()
