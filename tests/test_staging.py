"""The staged columns of a prepare (bars.data.staging): integers stored in their narrowest type, segments that
only widen, and every row read back in the first batch's types and in the order written."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from bars.data.staging import Stage, staged_tables


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


@pytest.mark.parametrize("rows", [1, 2, 4, 100])
def test_staged_tables_are_exact_slices_in_order(tmp_path, rows):
    stage = Stage(tmp_path)
    parts = list(_batches())
    for df in parts:
        stage.write("train", df)
    stage.close()
    tables = list(staged_tables(stage, "train", rows))
    assert all(t.num_rows == rows for t in tables[:-1]) and 0 < tables[-1].num_rows <= rows
    assert pa.concat_tables(tables).to_pylist() == pl.concat(parts).to_arrow().to_pylist()
    empty = list(staged_tables(stage, "valid", rows))  # a split nothing was written to: one empty table
    assert len(empty) == 1 and empty[0].num_rows == 0 and empty[0].schema == stage.schema


def test_a_split_read_in_its_widest_segment_schema(tmp_path):
    """The encoder reads a split in its last segment's types (polars widens them) and gets the same values."""
    stage = Stage(tmp_path)
    parts = list(_batches())[:3]  # int8 / int16 segments only
    for df in parts:
        stage.write("train", df)
    with pytest.raises(RuntimeError, match="before close"):
        stage.split_schema("train")
    stage.close()
    narrow = stage.split_schema("train")
    assert narrow.field("i").type == pa.int16() and narrow.field("u").type == pa.uint16()
    assert stage.split_schema("valid") == stage.schema
    tables = list(staged_tables(stage, "train", 3, narrow))
    assert all(t.schema == narrow for t in tables)
    back = pl.from_arrow(pa.concat_tables(tables)).cast({"i": pl.Int64, "u": pl.UInt32})
    assert back.equals(pl.concat(parts))


def test_the_other_splits_encode_at_a_lower_priority():
    """bars.data.engine._lower_priority raises the calling thread's nice value only (Linux)."""
    import os
    import sys
    import threading

    from bars.data import engine

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are Linux's")
    seen = {}

    def work():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        engine._lower_priority(3)
        seen["thread"] = (before, os.getpriority(os.PRIO_PROCESS, tid))

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    th = threading.Thread(target=work)
    th.start()
    th.join()
    before, after = seen["thread"]
    assert after == min(before + 3, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
