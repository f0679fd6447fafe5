"""The native reader: delimited raw files (plain or gzip) parsed and their categorical string fields interned in
compiled code (``bars/data/_fastcsv.c``, built by ``pip install`` when a C compiler is present; without one,
bars reads every file with pyarrow, as before). Other string columns come out as Arrow strings. Three threads
share the work: an I/O thread reads the next block (and feeds the file's sha256), a tokenizer thread parses the
block before it (integers in place; each interned field located and keyed, no interner touched), and the
reader's own thread interns the block before that, column by column in row order (so the ids are those of one
pass over the file).

It gives the same values as the pyarrow path (``bars.data.sources.read_batches``), by construction: the C code
handles only the unambiguous subset of pyarrow's CSV grammar (ASCII, no quote, no ``\\r``, integers as
``[-]digits``, floats only in that form, pyarrow's null tokens in string fields) and hands every other block back,
which is then parsed by pyarrow with the same options and interned into the same ids; a block pyarrow rejects
is diagnosed line by line, as on the pyarrow path. ``BARS_READER=arrow`` turns the native reader off
(``native`` requires it; default ``auto``). Interned fields come out as uint32 ids of an :class:`Interner`
(null = missing): the staged form the engine's :class:`bars.data.counting.Dictionary` gives, so the output
bytes do not depend on the reader (tests/test_native_reader.py).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import zlib
from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from bars.data.counting import Dictionary
from bars.data.errors import DataError
from bars.data.sources import (
    ARROW_TYPES,
    Source,
    convert_options,
    diagnose,
    no_rows,
    parse_options,
    resolve_columns,
)
from bars.fileio import is_gzip

CHUNK_BYTES = 16 << 20  # raw bytes per parsed block (~65k Criteo rows: about BATCH_ROWS)
KINDS = {"int": 1, "str": 2, "float": 3}  # a "str" column not interned is kind 4 (plain strings)


class _StrOut(ctypes.Structure):
    """A plain string column of one block (the C side's StrOut): its bytes and how many are used."""

    _fields_ = [("data", ctypes.c_void_p), ("used", ctypes.c_int64)]


_lib: ctypes.CDLL | None | bool = None


def _load() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        try:
            from bars.data import _fastcsv  # the optional compiled module
        except ImportError:
            _lib = False
        else:
            lib = ctypes.CDLL(_fastcsv.__file__)
            vp, i64, p = ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p
            lib.bars_interner_new.restype = vp
            lib.bars_interner_free.argtypes = [vp]
            lib.bars_interner_size.argtypes = [vp]
            lib.bars_interner_size.restype = i64
            lib.bars_interner_footprint.argtypes = [vp]
            lib.bars_interner_footprint.restype = i64
            lib.bars_interner_export_ids.argtypes = [vp, p, i64, p, p]
            lib.bars_interner_export_ids.restype = i64
            lib.bars_interner_export_views.argtypes = [vp, p, i64, p]
            lib.bars_interner_export_views.restype = i64
            lib.bars_interner_hex_numbers.argtypes = [vp, p]
            lib.bars_interner_hex_numbers.restype = i64
            lib.bars_tokenize.argtypes = [p, i64, ctypes.c_char, ctypes.c_int32, p, p, p, p, i64,
                                          ctypes.POINTER(i64), p, p]
            lib.bars_tokenize.restype = i64
            lib.bars_intern_deferred.argtypes = [vp, p, p, p, p, i64, p]
            lib.bars_intern_deferred.restype = i64
            lib.bars_intern_arrow.argtypes = [vp, p, p, p, i64, i64, p, p]
            lib.bars_intern_arrow.restype = i64
            lib.bars_count_ids.argtypes = [p, p, i64]
            lib.bars_count_ids.restype = None
            lib.bars_count_ids32.argtypes = [p, p, i64]
            lib.bars_count_ids32.restype = None
            lib.bars_count_lines.argtypes = [p, i64]
            lib.bars_count_lines.restype = i64
            lib.bars_last_newline.argtypes = [p, i64]
            lib.bars_last_newline.restype = i64
            lib.bars_criteo_bucket.argtypes = [p, p, i64, i64, p, i64, p, i64, i64, p]
            lib.bars_criteo_bucket.restype = None
            _lib = lib
    return _lib or None


def mode() -> str:
    m = os.environ.get("BARS_READER", "auto")
    if m not in ("auto", "native", "arrow"):
        raise DataError(f"BARS_READER={m!r}: expected auto, native or arrow")
    return m


def available() -> bool:
    """Whether the native reader is built and not turned off; ``BARS_READER=native`` without it is an error."""
    m = mode()
    if m == "arrow":
        return False
    if _load() is None:
        if m == "native":
            raise DataError("BARS_READER=native: the native reader is not built (bars/data/_fastcsv.c needs a C "
                            "compiler at `pip install -e .`); unset BARS_READER to read with pyarrow")
        return False
    return True


def bucket_by_table(arr: pa.Array, table: np.ndarray, bounds: np.ndarray, base: int) -> np.ndarray | None:
    """An int64 Arrow array bucketed in one compiled pass (bars.data.transforms.criteo_bucket): ``table[x]`` for x
    in the table, ``base`` + the count of ``bounds`` at or below x above it, a negative x as it is, missing -> 0.
    None when the native code is not built or is turned off."""
    if mode() == "arrow" or (lib := _load()) is None:
        return None
    n = len(arr)
    out = np.empty(n, dtype=np.int64)
    validity, data = arr.buffers()[:2]
    x = data.address + arr.offset * 8 if n else out.ctypes.data
    lib.bars_criteo_bucket(x, validity.address if validity is not None and arr.null_count else None, arr.offset, n,
                           table.ctypes.data, len(table), bounds.ctypes.data, len(bounds), base, out.ctypes.data)
    return out


def usable(src: Source, intern: set[str]) -> bool:
    """The native reader reads delimited files, plain or gzip (not a zip member), of int, float and string
    columns, of which it interns those in ``intern`` (and only when there are some: that is its gain)."""
    if src.fmt != "csv" or src.member is not None or len(src.sep) != 1 or not intern:
        return False
    return all(src.types.get(c, "str") in KINDS for c in resolve_columns(src))


class Interner(Dictionary):
    """A :class:`Dictionary` whose ids the native reader assigns while parsing (arrival order, as the
    polars-interned ids: the vocabulary does not depend on them)."""

    def __init__(self) -> None:
        lib = _load()
        if lib is None:
            raise DataError("the native reader is not built")
        self._lib, self._ptr = lib, lib.bars_interner_new()
        if not self._ptr:
            raise MemoryError("native interner")
        self.counts, self.counted = np.zeros(0, dtype=np.uint32), 0

    def __del__(self) -> None:
        self.release()

    def _live(self) -> int:
        if not getattr(self, "_ptr", None):
            raise RuntimeError("native interner: used after release()")
        return self._ptr

    @property
    def size(self) -> int:  # type: ignore[override]
        return int(self._lib.bars_interner_size(self._live()))

    def encode(self, col: str) -> pl.Expr:
        return pl.col(col)

    def values(self, ids: pl.Series) -> pl.Series:
        """The values of ``ids`` (staged ids, no null), in their order: only those are exported from the C side
        (the vocabulary's, a fraction of a Criteo field's millions), not the whole field first."""
        arr = np.ascontiguousarray(ids.to_numpy(), dtype=np.uint32)
        k = len(arr)
        # values of at most 8 bytes: Arrow string views (16 bytes each, the value inline), which polars takes as
        # they are: no offsets and data to convert from (at Criteo's 10M values, ~150 MB less at the peak)
        views = np.empty((max(k, 1), 16), dtype=np.uint8)
        rc = self._lib.bars_interner_export_views(self._live(), arr.ctypes.data, k, views.ctypes.data)
        if rc == 0:
            return pl.Series("", pa.Array.from_buffers(pa.string_view(), k, [None, pa.py_buffer(views)]))
        del views
        if rc != -3:  # -3: a value is longer than 8 bytes: Arrow large_string from the arena, below
            self._export_failed(rc, ids)
        offsets = np.empty(k + 1, dtype=np.int64)
        nbytes = self._lib.bars_interner_export_ids(self._live(), arr.ctypes.data, k, offsets.ctypes.data, None)
        data = np.empty(max(nbytes, 1), dtype=np.uint8)
        if nbytes >= 0:
            nbytes = self._lib.bars_interner_export_ids(self._ptr, arr.ctypes.data, k, offsets.ctypes.data,
                                                        data.ctypes.data)
        if nbytes < 0:
            self._export_failed(nbytes, ids)
        table = pa.LargeStringArray.from_buffers(k, pa.py_buffer(offsets), pa.py_buffer(data))
        return pl.Series("", table).cast(pl.String)

    def _export_failed(self, rc: int, ids: pl.Series) -> None:
        if rc == -2:
            raise IndexError(f"native interner: an id in {ids.name!r} is not interned (the interner holds {self.size})")
        raise MemoryError("native interner")

    def order_keys(self, ids: np.ndarray) -> np.ndarray | None:
        """While every value is 8 lowercase hex digits (the C side's hex mode): the number each of ``ids``'s values
        spells, first digit highest. Numbers order as the values' bytes (polars's string order) do, so the
        vocabulary can be sorted on them and only the kept values exported, in their final order. Else None."""
        size = self.size
        numbers = np.empty(max(size, 1), dtype=np.uint32)
        if self._lib.bars_interner_hex_numbers(self._ptr, numbers.ctypes.data) != 0:
            return None
        return numbers[ids]

    @property
    def footprint(self) -> int:
        """Bytes the interner's C side holds (its hash table, and the arena of values longer than 8 bytes)."""
        return int(self._lib.bars_interner_footprint(self._live()))

    def release(self) -> None:
        """Free the C side and the counts once the vocabulary is taken (the engine's encoding needs neither)."""
        if getattr(self, "_ptr", None):
            self._lib.bars_interner_free(self._ptr)
            self._ptr = None
        self.counts = np.zeros(0, dtype=np.uint32)

    def intern_arrow(self, arr: pa.Array) -> pa.Array:
        """Ids of a pyarrow string array (a block the C parser handed back)."""
        arr = arr.cast(pa.string())
        n = len(arr)
        ids = np.zeros(max(n, 1), dtype=np.uint32)
        valid = np.zeros((n + 7) // 8 or 1, dtype=np.uint8)
        bufs = arr.buffers()
        validity = bufs[0].address if bufs[0] is not None else None
        rc = self._lib.bars_intern_arrow(self._ptr, bufs[1].address, bufs[2].address if bufs[2] is not None else
                                         bufs[1].address, validity, arr.offset, n, ids.ctypes.data, valid.ctypes.data)
        if rc < 0:
            raise MemoryError("native interner")
        return pa.Array.from_buffers(pa.uint32(), n, [pa.py_buffer(valid), pa.py_buffer(ids)])


def read_batches(src: Source, interners: dict[str, Interner], rows: int | None = None, digest=None
                 ) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(first_line_number, table)`` as :func:`bars.data.sources.read_batches` does, with the columns
    named in ``interners`` as uint32 ids. ``digest`` (a hashlib object) is updated with every byte of the file,
    all of it even when ``rows`` stops the parsing early: the file is read once for both (a gzip file: the
    decompressed bytes, so the caller hashes a gzip file itself)."""
    lib = _load()
    names = resolve_columns(src)
    kinds_list = [KINDS[src.types.get(c, "str")] for c in names]
    kinds_list = [4 if k == 2 and c not in interners else k for c, k in zip(names, kinds_list)]
    kinds = np.array(kinds_list, dtype=np.int8)
    dtypes = {1: np.int64, 2: np.uint32, 3: np.float64}
    atypes = {1: pa.int64(), 2: pa.uint32(), 3: pa.float64()}
    sep = src.sep.encode()
    header_lines = 1 if src.header else 0
    done = 0
    try:
        f = (pa.input_stream(str(src.path), compression="gzip", buffer_size=1 << 20) if is_gzip(src.path)
             else open(src.path, "rb"))  # noqa: SIM115 - closed below
    except OSError as e:
        raise DataError(f"{src.path}: cannot read ({e})") from None
    io = cf.ThreadPoolExecutor(max_workers=1)  # reads (and hashes) the next buffer
    tok = cf.ThreadPoolExecutor(max_workers=1)  # locates the fields of one block while this thread interns the last

    def fill(buf: np.ndarray, have: int) -> int:
        got = f.readinto(memoryview(buf)[have:]) or 0
        if got and digest is not None:
            digest.update(memoryview(buf)[have:have + got])
        return got

    def tokenize(blk: _Block) -> int:
        consumed = ctypes.c_int64(0)
        return lib.bars_tokenize(blk.buf.ctypes.data, blk.cut, sep, len(names), kinds.ctypes.data, blk.ptrs,
                                 (ctypes.c_void_p * len(names))(*[o.ctypes.data for o in blk.outs]),
                                 (ctypes.c_void_p * len(names))(*[v.ctypes.data for v in blk.valid]),
                                 blk.cap, ctypes.byref(consumed), blk.spans_ptrs, blk.keys_ptrs)

    def block(buf: np.ndarray, cut: int, cap: int) -> _Block:
        blk = _Block(buf, cut, cap)
        blk.outs = [np.empty(cap, dtype=dtypes[k]) if k != 4 else np.zeros(cap + 1, dtype=np.int32) for k in kinds_list]
        blk.valid = [np.zeros((cap + 7) // 8, dtype=np.uint8) for _ in kinds_list]
        blk.strs = {j: (np.empty(max(cut, 1), dtype=np.uint8), _StrOut()) for j, k in enumerate(kinds_list) if k == 4}
        for data, so in blk.strs.values():
            so.data, so.used = data.ctypes.data, 0
        blk.ptrs = (ctypes.c_void_p * len(names))(*[
            ctypes.addressof(blk.strs[j][1]) if k == 4 else None for j, k in enumerate(kinds_list)])
        blk.spans = {j: np.empty(cap, dtype=np.uint64) for j, k in enumerate(kinds_list) if k == 2}
        blk.keys = {j: np.empty(cap, dtype=np.uint64) for j in blk.spans}
        blk.spans_ptrs = (ctypes.c_void_p * len(names))(*[
            blk.spans[j].ctypes.data if j in blk.spans else None for j in range(len(names))])
        blk.keys_ptrs = (ctypes.c_void_p * len(names))(*[
            blk.keys[j].ctypes.data if j in blk.keys else None for j in range(len(names))])
        blk.future = tok.submit(tokenize, blk)
        return blk

    def finish(blk: _Block, n: int, before: int) -> pa.Table:
        """The block's table: its interned columns interned now (in block order), or parsed by pyarrow."""
        if n < 0:
            table = _arrow_block(src, names, blk.buf[:blk.cut].tobytes(), interners, rows)
            if rows is not None and before + table.num_rows > rows:
                table = table.slice(0, rows - before)
            return table
        for j, spans in blk.spans.items():
            if lib.bars_intern_deferred(interners[names[j]]._ptr, blk.buf.ctypes.data, blk.outs[j].ctypes.data,
                                        spans.ctypes.data, blk.keys[j].ctypes.data, n, blk.valid[j].ctypes.data) < 0:
                raise MemoryError(f"{src.path}: native interner")
        blk.spans = blk.keys = {}  # (freed now: the block's table keeps only its columns)
        return pa.table([
            pa.Array.from_buffers(atypes[k], n, [pa.py_buffer(v), pa.py_buffer(o)]) if k != 4 else
            pa.StringArray.from_buffers(n, pa.py_buffer(o), pa.py_buffer(blk.strs[j][0][:blk.strs[j][1].used]),
                                        pa.py_buffer(v))
            for j, (k, o, v) in enumerate(zip(kinds_list, blk.outs, blk.valid))], names=names)

    prev: _Block | None = None
    try:
        head = b""
        if src.header:  # skipped (resolve_columns checked it); what follows it starts the first buffer
            while (nl := head.find(b"\n")) < 0 and (more := f.read(1 << 16)):
                head += more
            if digest is not None:
                digest.update(head)
            head = head[nl + 1:] if nl >= 0 else b""
        # three buffers: the I/O thread reads the file into one while the block in the second is tokenized and the
        # block in the third interned; ``have`` bytes of a line not yet ended are carried to the start of the
        # next buffer before it is filled (that buffer's block was interned the round before)
        bufs = [_padded(max(CHUNK_BYTES, 2 * len(head)))] + [_padded(CHUNK_BYTES) for _ in range(2)]
        which, have = 0, len(head)
        bufs[0][:have] = np.frombuffer(head, dtype=np.uint8)
        pending = io.submit(fill, bufs[0], have)
        known = 0  # rows of the blocks before the current one (tokenized or parsed by pyarrow)
        while True:
            cur = None
            if pending is not None:
                got = pending.result()
                pending = None
                buf = bufs[which]
                total = have + got
                cut = total if not got else lib.bars_last_newline(buf.ctypes.data, total)  # not got: the last line
                have, which = total - cut, (which + 1) % 3
                if got:
                    if have >= len(bufs[which]):  # a line longer than the buffer
                        bufs[which] = _padded(2 * have)
                    bufs[which][:have] = buf[cut:total]
                    pending = io.submit(fill, bufs[which], have)
                if cut:
                    cur = (buf, cut)
            table = None
            if prev is not None:  # its rows decide the next block's cap (data.rows)
                n = prev.future.result()
                if n == -2:
                    raise MemoryError(f"{src.path}: native interner")
                before = known
                if n < 0:
                    table = finish(prev, n, before)
                    known += table.num_rows
                else:
                    known += n
            if cur is not None and (rows is None or known < rows):
                cap = lib.bars_count_lines(cur[0].ctypes.data, cur[1])
                nxt = block(cur[0], cur[1], cap if rows is None else min(cap, rows - known))
            else:
                nxt = None
            if prev is not None:
                if table is None:
                    table = finish(prev, n, before)
                if table.num_rows:
                    yield done + 1 + header_lines, table
                    done += table.num_rows
            prev = nxt
            if prev is None and (pending is None or (rows is not None and known >= rows)):
                break
        if pending is not None:
            pending.result()
        if digest is not None:  # the rest of a file that ``rows`` stopped short
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error, pa.ArrowException) as e:  # a truncated or corrupt gzip file: by line
        if is_gzip(src.path):
            diagnose(src, names, e, rows)
        raise DataError(f"{src.path}: cannot read ({e})") from None
    finally:
        if prev is not None:
            prev.future.cancel()
            cf.wait([prev.future])
        tok.shutdown(wait=True)
        io.shutdown(wait=True)  # before the file closes
        f.close()
    if done == 0:
        raise no_rows(src)


def _padded(n: int) -> np.ndarray:
    """A block buffer of n bytes followed by 8 more of the same allocation: bars_tokenize reads up to 8 bytes from
    the start of a field however short it is."""
    return np.empty(n + 8, dtype=np.uint8)[:n]


class _Block:
    """A block of whole lines being read: its buffer and the columns bars_tokenize fills."""

    def __init__(self, buf: np.ndarray, cut: int, cap: int) -> None:
        self.buf, self.cut, self.cap = buf, cut, cap
        self.future: cf.Future


def _arrow_block(src: Source, names: list[str], block: bytes, interners: dict[str, Interner],
                 rows: int | None) -> pa.Table:
    """A block the C parser handed back, parsed by pyarrow with the options of the pyarrow path."""
    if not block.strip(b"\n"):
        return pa.table({c: pa.array([], type=pa.uint32() if c in interners else ARROW_TYPES[src.types.get(c, "str")])
                         for c in names})
    try:
        t = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=parse_options(src), convert_options=convert_options(src, names))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        diagnose(src, names, e, rows)
        raise  # diagnose always raises
    cols = [interners[c].intern_arrow(t.column(c).combine_chunks()) if c in interners else t.column(c).combine_chunks()
            for c in names]
    return pa.table(cols, names=names)
