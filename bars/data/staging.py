"""The staged columns of a prepare, between its read and its encode phase: Arrow IPC files per split.

Integer columns are stored in the narrowest type of their kind that holds every value written so far (a bucketed
Criteo field in int8, the ids of a field with fewer than 65,536 values in uint16): a Criteo-format row stages in
~70 bytes instead of ~215, which the kernel writes to the page cache and the disk and the encode phase reads back.
A split is a list of segments, each an IPC file with one schema; a batch that needs a wider type than the current
segment's starts the next segment (types only widen, so a split has a few). Every batch read back is cast to the
schema of the first batch written (the ``schema`` the encoders see), so the encoded output does not depend on the
narrowing: the same values, the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

STAGE_COMPRESSION = None  # staged IPC files: uncompressed (lz4 cost ~0.6 CPU-s per 1M Criteo rows)

# the integer types a staged column may take, narrowest first, by the type of its first batch
_LADDERS = {t: ladder for ladder in ([pa.int8(), pa.int16(), pa.int32(), pa.int64()],
                                     [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()])
            for t in ladder}
_BOUNDS = {t: ((-(1 << (t.bit_width - 1)), (1 << (t.bit_width - 1)) - 1) if pa.types.is_signed_integer(t)
               else (0, (1 << t.bit_width) - 1)) for t in _LADDERS}


def _fits(t: pa.DataType, lo: int, hi: int) -> bool:
    a, b = _BOUNDS[t]
    return a <= lo and hi <= b


class Stage:
    """Staged Arrow IPC files, segments per split; ``schema`` is the first batch's (what reading back gives)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.schema: pa.Schema | None = None
        self.segments: dict[str, list[Path]] = {}
        self._writers: dict[str, tuple[ipc.RecordBatchFileWriter, pa.Schema]] = {}

    def _narrow(self, split: str, table: pa.Table) -> pa.Schema:
        """The schema this batch is written with: each integer column in the narrowest type of its ladder that
        holds the batch's values and is not narrower than the split's current segment's."""
        current = self._writers[split][1] if split in self._writers else None
        fields = []
        for i, f in enumerate(self.schema):
            ladder = _LADDERS.get(f.type)
            if ladder is None:
                fields.append(f)
                continue
            start = ladder.index(current.field(i).type) if current is not None else 0
            mm = pc.min_max(table.column(i))
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            t = ladder[start]
            if lo is not None:
                t = next(x for x in ladder[start:] if _fits(x, lo, hi))
            fields.append(f.with_type(t))
        return pa.schema(fields)

    def write(self, split: str, df: pl.DataFrame) -> None:
        table = df.to_arrow()
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        schema = self._narrow(split, table)
        if split not in self._writers or self._writers[split][1] != schema:
            self._close(split)
            path = self.folder / f"{split}.{len(self.segments.setdefault(split, []))}.arrow"
            self.segments[split].append(path)
            self._writers[split] = (ipc.new_file(path, schema, options=ipc.IpcWriteOptions(
                compression=STAGE_COMPRESSION)), schema)
        self._writers[split][0].write_table(table.cast(schema, safe=False))  # min_max above: every value fits

    def _close(self, split: str) -> None:
        if split in self._writers:
            self._writers.pop(split)[0].close()

    def close(self) -> None:
        for split in list(self._writers):
            self._close(split)

    def split_schema(self, split: str) -> pa.Schema:
        """The schema of the split's last (widest) segment: every one of its rows fits it."""
        if split in self._writers:
            raise RuntimeError("stage: read before close()")
        segs = self.segments.get(split)
        if not segs:
            return self.schema
        with ipc.open_file(segs[-1]) as f:
            return f.schema

    def batches(self, split: str, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        """The split's staged rows in the order written, in batches of ``schema`` (default: the first batch's)."""
        schema = schema or self.schema
        for path in self.segments.get(split, []):
            with ipc.open_file(path) as f:
                for i in range(f.num_record_batches):
                    b = f.get_batch(i)
                    yield b if b.schema == schema else b.cast(schema)

    def polars_schema(self) -> dict[str, pl.DataType]:
        """``schema`` in polars types (built from an empty table of no batches: ``Schema.empty_table`` imports
        pandas, which a ``bars train`` process never needs)."""
        return dict(pl.from_arrow(pa.Table.from_batches([], self.schema)).schema)

    def scan(self, split: str) -> pl.LazyFrame:
        """The split's staged rows as a polars LazyFrame with the columns of ``schema``."""
        wide = self.polars_schema()
        frames = [pl.scan_ipc(p).cast(wide) for p in self.segments.get(split, [])]
        return pl.concat(frames, how="vertical") if frames else pl.LazyFrame(schema=wide)

    def files(self) -> list[Path]:
        return [p for segs in self.segments.values() for p in segs]


def staged_tables(stage: Stage, split: str, rows: int, schema: pa.Schema | None = None) -> Iterator[pa.Table]:
    """The staged split in tables of exactly ``rows`` rows (the last one shorter; one empty table if the split has
    no rows), read batch by batch, in ``schema`` (default: the first batch's)."""
    schema = schema or stage.schema
    pending: list[pa.RecordBatch] = []
    n = 0
    for b in stage.batches(split, schema):
        pending.append(b)
        n += b.num_rows
        while n >= rows:
            t = pa.Table.from_batches(pending, schema)
            yield t.slice(0, rows)
            rest = t.slice(rows)
            pending, n = rest.to_batches(), rest.num_rows
    if n or split not in stage.segments:
        yield pa.Table.from_batches(pending, schema)
