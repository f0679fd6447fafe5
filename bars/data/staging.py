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

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from polars.io.plugins import register_io_source
from pyarrow import ipc

STAGE_COMPRESSION = None  # staged IPC files: uncompressed (lz4 cost ~0.6 CPU-s per 1M Criteo rows)
WRITE_AHEAD = 4  # batches a background writer may hold before ``write`` waits for it

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
    """Staged Arrow IPC files, segments per split; ``schema`` is the first batch's (what reading back gives).

    With ``background=True`` the batches are converted, narrowed and written by a thread of the stage's own, in the
    order ``write`` received them, while the caller goes on (the read phase's main thread is its longest chain:
    45M Criteo rows, ~7 CPU-s of casts, min/max and copies into the page cache move off it). A writer's error is
    raised by the next ``write`` or by ``close``, which waits for every batch to be written."""

    def __init__(self, folder: Path, background: bool = False):
        self.folder = folder
        self.schema: pa.Schema | None = None
        self.segments: dict[str, list[Path]] = {}
        self._writers: dict[str, tuple[ipc.RecordBatchFileWriter, pa.Schema]] = {}
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._raised = False
        if background:
            self._queue = queue.Queue(maxsize=WRITE_AHEAD)
            self._thread = threading.Thread(target=self._drain, name="bars-stage-writer", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after an error the rest is dropped (the prepare fails), never waited on
                try:
                    self._write(*item)
                except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
                    self._error = e

    def _raise(self) -> None:
        """Raise the background writer's error, once (``close`` in a ``finally`` after ``write`` raised it)."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

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
        """Stage ``df``'s rows after the split's rows written before (by the background writer, if any)."""
        if self._queue is None:
            self._write(split, df)
            return
        self._raise()
        self._queue.put((split, df))

    def _write(self, split: str, df: pl.DataFrame) -> None:
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
        """Wait for the background writer (every batch written), close the files; raise the writer's error."""
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        for split in list(self._writers):
            self._close(split)
        self._raise()

    def _staged(self, split: str) -> Iterator[pa.RecordBatch]:
        """The split's batches in the order written, each in its segment's (narrow) schema."""
        for path in self.segments.get(split, []):
            with ipc.open_file(path) as f:
                for i in range(f.num_record_batches):
                    yield f.get_batch(i)

    def batches(self, split: str, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        """The split's staged rows in the order written, in batches of ``schema`` (default: the first batch's)."""
        schema = schema or self.schema
        for b in self._staged(split):
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

    def stream(self, split: str) -> pl.LazyFrame:
        """The split's staged rows as a polars LazyFrame that reads them batch by batch, in the order written,
        with the columns of ``schema``. Unlike ``scan`` it does not map the files into memory (a mapped file's pages
        count in the process's resident set for as long as the query runs: the whole staged train split)."""
        wide = self.polars_schema()

        def source(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
                   batch_size: int | None) -> Iterator[pl.DataFrame]:
            left = n_rows
            for b in self._staged(split):
                if left is not None and left <= 0:
                    return
                df = pl.from_arrow(b, rechunk=False).cast(wide)
                if with_columns is not None:
                    df = df.select(with_columns)
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                yield df

        return register_io_source(source, schema=wide, explain_name="bars stage", explain_detail=split)

    def files(self) -> list[Path]:
        return [p for segs in self.segments.values() for p in segs]
