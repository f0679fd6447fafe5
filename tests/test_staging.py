"""The staged columns of a prepare (bars.data.staging): integers stored in their narrowest type, segments that
only widen, and every row read back in the first batch's types and in the order written."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from bars.data.staging import Stage


def _batches():
    yield pl.DataFrame({"i": [0, -3, 127], "u": pl.Series([1, 2, 255], dtype=pl.UInt32),
                        "f": [0.5, 1.0, 2.0], "s": ["a", None, "c"]})
    yield pl.DataFrame({"i": [-128, 5], "u": pl.Series([0, 7], dtype=pl.UInt32), "f": [1.0, 2.0], "s": ["d", "e"]})
    yield pl.DataFrame({"i": [128, None], "u": pl.Series([256, 3], dtype=pl.UInt32), "f": [3.0, 4.0], "s": ["f", "g"]})
    yield pl.DataFrame({"i": [None, None], "u": pl.Series([1, 2], dtype=pl.UInt32), "f": [5.0, 6.0], "s": ["h", "i"]})
    yield pl.DataFrame({"i": [-(2**63), 2**63 - 1], "u": pl.Series([2**32 - 1, 0], dtype=pl.UInt32),
                        "f": [7.0, 8.0], "s": ["j", "k"]})


def test_segments_widen_and_rows_come_back_in_the_first_schema(tmp_path):
    stage = Stage(tmp_path)
    parts = list(_batches())
    for df in parts:
        stage.write("train", df)
    stage.write("test", parts[0])
    stage.close()
    types = []
    for path in stage.segments["train"]:
        with pa.ipc.open_file(path) as f:
            types.append((f.schema.field("i").type, f.schema.field("u").type))
    # int8/uint8 for the first two batches, then int16/uint16, kept for the all-null batch, then int64/uint32
    assert types == [(pa.int8(), pa.uint8()), (pa.int16(), pa.uint16()), (pa.int64(), pa.uint32())]
    assert stage.schema.field("i").type == pa.int64() and stage.schema.field("u").type == pa.uint32()
    back = pa.Table.from_batches(list(stage.batches("train")), stage.schema)
    assert back.schema == stage.schema
    assert back.to_pylist() == pl.concat(parts).to_arrow().to_pylist()
    scanned = stage.scan("train").collect()
    assert scanned.schema == pl.concat(parts).schema and scanned.equals(pl.concat(parts))
    assert [s.name for s in stage.segments["test"]] == ["test.0.arrow"]


def test_stream_reads_every_row_in_order_in_the_first_schema(tmp_path):
    """The encoder's source: the staged rows batch by batch (no mapped files), widened to the first batch's types,
    with polars's projection, filter and row limit applied; a split nothing was written to has no rows."""
    stage = Stage(tmp_path)
    parts = list(_batches())
    for df in parts:
        stage.write("train", df)
    stage.close()
    assert len(stage.segments["train"]) == 3
    whole = pl.concat(parts)
    got = stage.stream("train").collect(engine="streaming")
    assert got.schema == whole.schema and got.equals(whole)
    assert stage.stream("train").select("s", "i").collect().equals(whole.select("s", "i"))
    assert stage.stream("train").filter(pl.col("f") > 2.5).collect().equals(whole.filter(pl.col("f") > 2.5))
    for n in (1, 4, 9):
        assert stage.stream("train").head(n).collect().equals(whole.head(n))
    empty = stage.stream("valid").collect()
    assert empty.height == 0 and empty.schema == whole.schema


def test_stream_sinks_the_same_parquet_as_the_rows_written_in_one_go(tmp_path):
    """Row groups of the requested size, in order, whatever batches were staged."""
    import pyarrow.parquet as pq

    stage = Stage(tmp_path)
    parts = list(_batches())[:3]
    for df in parts:
        stage.write("train", df)
    stage.close()
    dst = tmp_path / "train.parquet"
    stage.stream("train").select(pl.col("i").cast(pl.Int32), "f").sink_parquet(dst, row_group_size=3)
    md = pq.ParquetFile(dst).metadata
    assert [md.row_group(k).num_rows for k in range(md.num_row_groups)] == [3, 3, 1]
    assert pl.read_parquet(dst).equals(pl.concat(parts).select(pl.col("i").cast(pl.Int32), "f"))


def test_background_writer_writes_the_same_files(tmp_path):
    stages = {}
    for mode in (False, True):
        stage = Stage(tmp_path / str(mode), background=mode)
        (tmp_path / str(mode)).mkdir()
        for df in _batches():
            stage.write("train", df)
            stage.write("valid", df.head(1))
        stage.close()
        stages[mode] = stage
    fg, bg = stages[False], stages[True]
    assert [p.name for p in bg.files()] == [p.name for p in fg.files()]
    for a, b in zip(fg.files(), bg.files()):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert bg.schema == fg.schema


def test_background_writer_error_is_raised_once_and_nothing_waits(tmp_path, monkeypatch):
    import pytest

    stage = Stage(tmp_path, background=True)
    calls = []
    real = Stage._write

    def failing(self, split, df):
        calls.append(split)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(self, split, df)

    monkeypatch.setattr(Stage, "_write", failing)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(50):  # more batches than the queue holds: a dead writer must not block write()
            for df in _batches():
                stage.write("train", df)
        stage.close()
    stage.close()  # the error was raised once; closing again (a caller's ``finally``) does not raise it again
    assert len(calls) == 2  # the batches after the error were dropped, not written
