"""Splits bigger than memory: Parquet row groups streamed into batches, with the in-memory loader's interface.

:class:`StreamSplit` is what :class:`bars.data.loader.SplitTensors` is for ``fit`` / ``evaluate`` / ``predict``
(``len()``, ``.label``, ``.features[name]``, ``.batches(batch_size, shuffle, seed, device)``) without holding
the features in memory:

- ``batches(shuffle=False)``: the rows in file order, in slices of exactly ``batch_size`` (the last one shorter):
  the same batches, in the same order, as the in-memory loader gives, so validation and test metrics are equal.
- ``batches(shuffle=True, seed=s)``: a generator seeded with ``s`` draws a permutation of the row groups (the
  engine writes 262,144 rows per group); the groups are read in that order into a window of about
  ``buffer_rows`` rows, the window (plus the rows left over from the previous one, fewer than a batch) is
  permuted by the same generator and cut into batches. Every row appears exactly once per epoch; the batches
  depend only on the file and the seed (reading happens on a background thread, but every random draw is made
  in one fixed order), so runs with the same seed get the same batches. They are *not* the in-memory loader's
  batches (that one permutes all rows at once), which is why a run records which loader trained it.
- A background thread reads, decodes and batches ``prefetch`` batches ahead (pyarrow and torch release the
  GIL); its errors are raised in the consumer; stopping early (a pruned trial) stops it.
- ``.label`` is read once (4 bytes a row); ``.features[name]`` reads one column on first use (the group column
  of gAUC), never all of them.

Memory: about ``buffer_rows`` rows of tensors + one decoded row group + ``prefetch`` batches, whatever the
split's size. :func:`plan_modes` decides, per split, memory or stream for ``loader.mode=auto`` from the feature
spec's row width and the memory available.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from bars.data.errors import DataError
from bars.data.spec import FeatureSpec

MODES = ("auto", "memory", "stream")


@dataclass(frozen=True)
class LoaderConfig:
    """The ``loader:`` block of conf/config.yaml (how prepared splits reach the trainer; not fingerprinted)."""

    mode: str = "auto"  # auto | memory | stream
    memory_fraction: float = 0.5  # auto: a split is held in memory when it fits this share of available RAM
    buffer_rows: int = 1 << 20  # stream: rows shuffled together (after shuffling the row groups)
    prefetch: int = 8  # stream: batches prepared ahead on the background thread
    verify: str = "stamp"  # split checksums: stamp (hash once, then size+mtime+inode) | full (every load) | none

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"loader.mode must be one of {list(MODES)}, got {self.mode!r}")
        if not 0 < float(self.memory_fraction) <= 1:
            problems.append(f"loader.memory_fraction must be in (0, 1], got {self.memory_fraction!r}")
        for k in ("buffer_rows", "prefetch"):
            if int(getattr(self, k)) < 1:
                problems.append(f"loader.{k} must be >= 1, got {getattr(self, k)!r}")
        if self.verify not in ("stamp", "full", "none"):
            problems.append(f"loader.verify must be one of ['stamp', 'full', 'none'], got {self.verify!r}")
        if problems:
            raise DataError("; ".join(problems))

    @classmethod
    def from_cfg(cls, block: Mapping[str, Any] | None) -> LoaderConfig:
        """Strict: an unknown key is an error naming the known ones. None (a config recorded before the block
        existed) gives the defaults."""
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise DataError(f"loader: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**block)


def row_bytes(spec: FeatureSpec) -> int:
    """Bytes per row of a split held as tensors (int32/float32 columns, sequences of max_len, the label)."""
    return 4 + sum(4 * (f.max_len if f.type == "sequence" else 1) for f in spec.features)


def available_memory() -> int | None:
    """Bytes of memory this process may still use: MemAvailable, lowered by a cgroup (container) limit."""
    avail = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    if avail is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = int(limit) - used
            avail = room if avail is None else min(avail, room)
    return avail


def plan_modes(spec: FeatureSpec, rows: Mapping[str, int], cfg: LoaderConfig,
               available: int | None = None) -> dict[str, str]:
    """``{split: "memory" | "stream"}``. With ``mode=auto`` the splits are taken in order (train first) and each
    is held in memory while its tensors fit in ``memory_fraction`` of the memory left (``available``, default
    :func:`available_memory`; loading needs about twice the tensors' size for a moment); otherwise it is streamed."""
    if cfg.mode != "auto":
        return dict.fromkeys(rows, cfg.mode)
    avail = available_memory() if available is None else available
    if avail is None:
        return dict.fromkeys(rows, "memory")
    budget = float(cfg.memory_fraction) * avail
    width = row_bytes(spec)
    out = {}
    for name, n in rows.items():
        need = 2 * n * width
        out[name] = "memory" if need <= budget else "stream"
        if out[name] == "memory":
            budget -= need / 2
    return out


class _LazyColumns(Mapping):
    """``split.features``: a mapping over the spec's fields that reads a column from the file on first access."""

    def __init__(self, split: StreamSplit) -> None:
        self._split = split
        self._cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._split.kinds:
            raise KeyError(name)
        if name not in self._cache:
            self._cache[name] = self._split.read_column(name)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._split.kinds)

    def __len__(self) -> int:
        return len(self._split.kinds)


class StreamSplit:
    """One prepared split read from its Parquet file in row groups (see the module doc)."""

    def __init__(self, path: str | Path, spec: FeatureSpec, *, buffer_rows: int = 1 << 20, prefetch: int = 8,
                 check: bool = True) -> None:
        from bars.data.loader import check_schema

        self.path, self.spec = Path(path), spec
        self.buffer_rows, self.prefetch = int(buffer_rows), int(prefetch)
        try:
            meta = pq.ParquetFile(self.path).metadata
        except (OSError, ValueError) as e:
            raise DataError(f"{self.path}: cannot read the Parquet metadata: {e}") from None
        if check:
            check_schema(spec, meta.schema.to_arrow_schema(), str(self.path))
        self.group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.n = int(meta.num_rows)
        self.kinds = {f.name: (f.type, f.max_len) for f in spec.features}
        self.features = _LazyColumns(self)
        self._label: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"StreamSplit({self.path}, {self.n:,} rows in {len(self.group_rows)} row groups)"

    @property
    def label(self) -> torch.Tensor:
        if self._label is None:
            self._label = self.read_column(self.spec.label, "numeric")
        return self._label

    def read_column(self, name: str, kind: str | None = None) -> torch.Tensor:
        from bars.data.loader import _column, read_parquet

        kind, max_len = (kind, 0) if kind is not None else self.kinds[name]
        return _column(read_parquet(self.path, columns=[name]), name, kind, max_len)

    def _group(self, pf: pq.ParquetFile, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        from bars.data.loader import _column

        t = pf.read_row_group(i, columns=[*self.kinds, self.spec.label])
        feats = {k: _column(t, k, kind, max_len) for k, (kind, max_len) in self.kinds.items()}
        return feats, _column(t, self.spec.label, "numeric", 0)

    def _produce(self, batch_size: int, shuffle: bool, seed: int, pin: bool
                 ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """The batches, in order (runs on the background thread; every random draw is made here, in order)."""
        g = torch.Generator().manual_seed(int(seed)) if shuffle else None
        groups = torch.randperm(len(self.group_rows), generator=g).tolist() if shuffle else \
            list(range(len(self.group_rows)))
        pf = pq.ParquetFile(self.path)
        carry: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None
        window: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []
        rows = 0

        def cut(parts: list, final: bool):
            feats = {k: torch.cat([p[0][k] for p in parts]) if len(parts) > 1 else parts[0][0][k] for k in self.kinds}
            y = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            n = int(y.shape[0])
            perm = torch.randperm(n, generator=g) if shuffle else None
            full = n - n % batch_size if not final else n
            for start in range(0, full, batch_size):
                if perm is None:
                    sl = slice(start, min(start + batch_size, n))
                    xb, yb = {k: v[sl] for k, v in feats.items()}, y[sl]
                else:
                    idx = perm[start:start + batch_size]
                    xb, yb = {k: v.index_select(0, idx) for k, v in feats.items()}, y.index_select(0, idx)
                if pin:
                    xb, yb = {k: v.pin_memory() for k, v in xb.items()}, yb.pin_memory()
                yield xb, yb
            if full < n:  # fewer than batch_size rows: carried into the next window
                rest = perm[full:] if perm is not None else None
                sl = slice(full, n)
                return ({k: (v.index_select(0, rest) if rest is not None else v[sl]) for k, v in feats.items()},
                        y.index_select(0, rest) if rest is not None else y[sl])
            return None

        for i in groups:
            window.append(self._group(pf, i))
            rows += self.group_rows[i]
            if rows >= self.buffer_rows or not shuffle:
                parts = ([carry] if carry is not None else []) + window
                carry = yield from cut(parts, final=False)
                window, rows = [], 0
        parts = ([carry] if carry is not None else []) + window
        if parts and sum(int(p[1].shape[0]) for p in parts):
            yield from cut(parts, final=True)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, device: str | torch.device | None = None
                ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Yield ``(features, label)`` batches (see the module doc), prepared on a background thread."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cuda = device is not None and torch.device(device).type == "cuda"
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        end = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for item in self._produce(batch_size, shuffle, seed, pin=cuda):
                    if not put(item):
                        return
                put(end)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
                put(e)

        th = threading.Thread(target=work, name=f"stream:{self.path.name}", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is end:
                    break
                if isinstance(item, BaseException):
                    raise DataError(f"{self.path}: streaming failed: {type(item).__name__}: {item}") from item
                xb, yb = item
                if device is not None:
                    xb = {k: v.to(device, non_blocking=cuda) for k, v in xb.items()}
                    yb = yb.to(device, non_blocking=cuda)
                yield xb, yb
        finally:
            stop.set()
            th.join(timeout=30)
