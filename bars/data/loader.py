"""Prepared dataset folder -> contiguous tensors, verified; batches by slicing a seeded permutation.

``load_dataset(folder)`` checks every split file's sha256 against manifest.json (hashed on its first load, then
trusted by a stamp while unchanged: see Verification below) and the feature spec against
the Parquet schema (names and dtypes), then reads whole columns into tensors: categorical int32 [N], numeric
float32 [N], sequence int32 [N, L] (0 = padding: the mask is ``x > 0``), label float32 [N] (the spec's first
label), every label float32 [N, T] (``labels``, columns in the spec's ``labels`` order), meta int64 [N].
Pretrained table rows (``pretrained_<field>.parquet``, sha256 in the manifest) are read into the returned
spec's ``tables``. A split the manifest marks ``same_as`` another (BARS's sequential boards validate on the
test set) is the same tensors, loaded once. A split that does not fit in memory
(or every split, when asked: ``loader.mode=stream``) is a :class:`bars.data.stream.StreamSplit` instead, with the
same interface (single-label datasets without meta columns).

Verification (``verify``, ``loader.verify``): ``"full"`` hashes every file on every load; ``"stamp"`` (the
default, ``True``) hashes a file the first time it is loaded and, when it matches, records its size, mtime and
inode with the manifest's sha256 in ``.verified.json`` in the folder; a later load whose file has the same size,
mtime and inode and whose manifest still names the same sha256 skips the hash (a file rewritten, touched, replaced
or truncated is hashed again). ``False``/``"none"``: no check. A folder that cannot be written (read-only, a
full disk) keeps working, hashing every time. The manifest's checksums are computed when the files are written
(``bars prepare``), and a raw download is checked against its md5 there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bars.data.errors import DataError
from bars.data.spec import FeatureSpec, PretrainedRows, SpecError
from bars.data.writer import MANIFEST, SPEC
from bars.fileio import atomic_write_text, file_digest, remove_stale_temps

if TYPE_CHECKING:
    from bars.data.stream import LoaderConfig, StreamSplit


@dataclass
class SplitTensors:
    """One split as tensors. ``label`` [N] is the first label (what single-task training fits); ``labels``
    [N, T] holds every label in ``label_names`` order (for a single-label split a view of ``label``); ``meta``
    holds the columns that are not features (int64 [N], e.g. the group id of gAUC)."""

    features: dict[str, torch.Tensor]
    label: torch.Tensor
    labels: torch.Tensor | None = None
    label_names: tuple[str, ...] = ()
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is None:
            self.labels = self.label.unsqueeze(1)
        if self.labels.dim() != 2 or self.labels.shape[0] != self.label.shape[0]:
            raise ValueError(f"labels must be [N, T] with N = {self.label.shape[0]}, got {tuple(self.labels.shape)}")
        if self.label_names and len(self.label_names) != self.labels.shape[1]:
            raise ValueError(f"{len(self.label_names)} label names {list(self.label_names)} for "
                             f"{self.labels.shape[1]} label columns")

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def column(self, name: str) -> torch.Tensor:
        """A feature or meta column by name (what grouped metrics group by)."""
        if name in self.features:
            return self.features[name]
        if name in self.meta:
            return self.meta[name]
        raise KeyError(f"no column {name!r}: features {sorted(self.features)}, meta {sorted(self.meta)}")

    def to(self, device: str | torch.device) -> SplitTensors:
        """Move all tensors to ``device`` once (returns a new SplitTensors)."""
        label = self.label.to(device)
        labels = label.unsqueeze(1) if self.labels.shape[1] == 1 else self.labels.to(device)
        return SplitTensors({k: v.to(device) for k, v in self.features.items()}, label, labels, self.label_names,
                            {k: v.to(device) for k, v in self.meta.items()})

    def batches(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, device: str | torch.device | None = None,
        *, all_labels: bool = False,
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Yield ``(features, label)`` batches (``all_labels``: ``(features, labels [B, T])``). Shuffled
        batches are slices of one ``torch.randperm`` drawn from a generator seeded with ``seed`` (pass e.g.
        ``seed + epoch`` for a new order each epoch); unshuffled batches are contiguous views. The last batch may
        be smaller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        target = self.labels if all_labels else self.label
        n = len(self)
        perm = None
        if shuffle:
            g = torch.Generator().manual_seed(int(seed))
            perm = torch.randperm(n, generator=g)
            if self.label.device.type != "cpu":
                perm = perm.to(self.label.device)
        nb = device is not None and torch.device(device).type == "cuda"
        for start in range(0, n, batch_size):
            if perm is None:
                sl = slice(start, start + batch_size)
                feats = {k: v[sl] for k, v in self.features.items()}
                y = target[sl]
            else:
                idx = perm[start:start + batch_size]
                feats = {k: v.index_select(0, idx) for k, v in self.features.items()}
                y = target.index_select(0, idx)
            if device is not None:
                feats = {k: v.to(device, non_blocking=nb) for k, v in feats.items()}
                y = y.to(device, non_blocking=nb)
            yield feats, y


@dataclass
class Dataset:
    folder: Path
    spec: FeatureSpec
    manifest: dict
    splits: dict[str, SplitTensors | StreamSplit]
    modes: dict[str, str] | None = None  # split -> "memory" | "stream" (how each split is read)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]


_EXPECTED = {"categorical": pa.int32(), "numeric": pa.float32()}


def check_schema(spec: FeatureSpec, schema: pa.Schema, where: str) -> None:
    """The Parquet schema must hold exactly the spec's fields, labels and meta columns with the contract's dtypes."""
    names = set(schema.names)
    want = set(spec.names) | set(spec.labels) | set(spec.meta)
    if names != want:
        raise SpecError(f"{where}: columns do not match the feature spec: missing {sorted(want - names)}, "
                        f"unexpected {sorted(names - want)}")
    for f in spec.features:
        t = schema.field(f.name).type
        if f.type == "sequence":
            ok = pa.types.is_fixed_size_list(t) and t.value_type == pa.int32() and t.list_size == f.max_len
            expected = f"fixed_size_list<int32>[{f.max_len}]"
        else:
            ok, expected = t == _EXPECTED[f.type], str(_EXPECTED[f.type])
        if not ok:
            raise SpecError(f"{where}: column {f.name!r} ({f.type}) has type {t}, expected {expected}")
    for name in spec.labels:
        if schema.field(name).type != pa.float32():
            raise SpecError(f"{where}: label {name!r} has type {schema.field(name).type}, expected float")
    for name in spec.meta:
        if schema.field(name).type != pa.int64():
            raise SpecError(f"{where}: meta column {name!r} has type {schema.field(name).type}, expected int64")


_NUMPY = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float32(): np.float32, pa.float64(): np.float64}


def _numpy(arr: pa.Array) -> np.ndarray:
    """A primitive Arrow array without nulls as a (read-only) numpy view of its buffer; any other through
    ``to_numpy``. The view, because pyarrow's ``to_numpy`` imports pandas (~0.5 s of a ``bars train`` process that
    has no other use for it; issue 16)."""
    dtype = _NUMPY.get(arr.type)
    if dtype is None or arr.null_count:
        return arr.to_numpy(zero_copy_only=False)
    size = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * size)


def _column(table: pa.Table, name: str, kind: str, max_len: int) -> torch.Tensor:
    col = table.column(name).combine_chunks()
    if kind == "sequence":
        arr = np.asarray(_numpy(col.flatten()), dtype=np.int32).reshape(len(col), max_len)
    else:
        arr = _numpy(col)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, copy=True, order="C")
    return torch.from_numpy(arr)


def split_from_table(table: pa.Table, spec: FeatureSpec, where: str) -> SplitTensors:
    """An encoded table (the spec's fields + label(s) + meta, the contract's dtypes) as tensors: what a split file
    holds, and what ``bars.data.apply`` makes of new raw rows."""
    check_schema(spec, table.schema, where)
    feats = {f.name: _column(table, f.name, f.type, f.max_len) for f in spec.features}
    label = _column(table, spec.label, "numeric", 0)
    labels = None
    if spec.multi_label:
        labels = torch.from_numpy(np.stack([np.asarray(table.column(c).combine_chunks().to_numpy(
            zero_copy_only=False), dtype=np.float32) for c in spec.labels], axis=1))
    meta = {c: _column(table, c, "meta", 0) for c in spec.meta}
    return SplitTensors(feats, label, labels, tuple(spec.labels), meta)


VERIFIED = ".verified.json"  # {file: [size, mtime_ns, inode, sha256]} of files whose sha256 matched on a load
VERIFY_MODES = ("stamp", "full", "none")


def verify_mode(verify: bool | str) -> str:
    mode = {True: "stamp", False: "none"}.get(verify, verify) if isinstance(verify, bool) else verify
    if mode not in VERIFY_MODES:
        raise DataError(f"loader.verify must be one of {list(VERIFY_MODES)}, got {verify!r}")
    return mode


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class _Stamps:
    """The folder's record of files already hashed (see the module docstring: ``stamp`` verification)."""

    def __init__(self, folder: Path, mode: str) -> None:
        self.folder, self.mode, self.changed = folder, mode, False
        self.seen: dict[str, list] = {}
        if mode == "stamp":
            with contextlib.suppress(OSError, ValueError, TypeError):
                loaded = json.loads((folder / VERIFIED).read_text())
                self.seen = loaded if isinstance(loaded, dict) else {}

    def verify(self, path: Path, entry: dict, what: str) -> None:
        if self.mode == "none":
            return
        key = path.name
        if self.mode == "stamp" and self.seen.get(key) == [*_identity(path), entry["sha256"]]:
            return
        before = _identity(path)
        _verify(path, entry, what)
        if self.mode == "stamp" and _identity(path) == before:  # unchanged while it was hashed
            self.seen[key] = [*before, entry["sha256"]]
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        with contextlib.suppress(OSError):  # a read-only folder: hashed again next time, nothing else changes
            remove_stale_temps(self.folder)  # a stamp write killed mid-way (kill -9) left its temporary
            atomic_write_text(self.folder / VERIFIED, json.dumps(self.seen, indent=0, sort_keys=True))


def _verify(path: Path, entry: dict, what: str) -> None:
    got = file_digest(path, "sha256")
    if got != entry["sha256"]:
        raise DataError(f"{path}: sha256 mismatch: manifest says {entry['sha256']}, file has {got} "
                        f"(modified or corrupted {what}; prepare the dataset again)")


def load_tables(folder: Path, spec: FeatureSpec, manifest: dict, verify: bool | str = True,
                stamps: _Stamps | None = None) -> dict[str, PretrainedRows]:
    """The pretrained rows of every field that declares a table, verified against the manifest."""
    stamps = stamps or _Stamps(Path(folder), verify_mode(verify))
    out = {}
    for f in spec.features:
        if not f.pretrained:
            continue
        entry = (manifest.get("tables") or {}).get(f.name)
        path = folder / f.pretrained
        if entry is None:
            raise DataError(f"{folder / MANIFEST}: no 'tables' entry for {f.name!r}, whose spec names {f.pretrained}")
        if not path.is_file():
            raise DataError(f"{path}: pretrained table of {f.name!r} missing")
        stamps.verify(path, entry, "pretrained table")
        t = read_parquet(path)
        index = np.asarray(t.column("index").to_numpy(), dtype=np.int64)
        vec = t.column("vector").combine_chunks()
        vectors = np.asarray(vec.flatten().to_numpy(), dtype=np.float32).reshape(len(vec), f.pretrained_dim)
        if len(index) and (index.min() < 1 or index.max() >= f.vocab_size):
            raise DataError(f"{path}: indices span [{index.min()}, {index.max()}], expected [1, {f.vocab_size})")
        out[f.name] = PretrainedRows(index=index, vectors=vectors)
    return out


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as an Arrow table: ``pq.ParquetFile(...).read``, the same table as ``pq.read_table`` for one
    file, without the ``pyarrow.dataset`` module, whose import also imports pandas (~0.5-1 s of a ``bars train``
    process that needs neither; issue 16)."""
    with pq.ParquetFile(path) as pf:
        return pf.read(columns=columns)


def load_split(folder: Path, spec: FeatureSpec, name: str, file: str | None = None) -> SplitTensors:
    path = Path(folder) / (file or f"{name}.parquet")
    return split_from_table(read_parquet(path), spec, str(path))


def load_dataset(folder: str | Path, splits=("train", "valid", "test"), verify: bool | str | None = None,
                 loader: LoaderConfig | None = None) -> Dataset:
    """Load a prepared dataset folder (see bars.data.prepare.prepare). ``loader`` (the ``loader:`` config block,
    default: everything in memory) decides per split whether it is read into tensors or streamed
    (``bars.data.stream.plan_modes``); ``Dataset.modes`` says which. ``verify``: stamp (default: ``True``, or
    ``loader.verify`` when a loader block is given) | full | none (``False``), see the module docstring."""
    folder = Path(folder)
    if verify is None:
        verify = loader.verify if loader is not None else True
    stamps = _Stamps(folder, verify_mode(verify))
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: no {MANIFEST}; not a prepared dataset folder (run bars prepare)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{folder / MANIFEST}: not valid JSON ({e})") from None
    spec = FeatureSpec.load(folder / SPEC)
    tables = load_tables(folder, spec, manifest, stamps=stamps)
    if tables:
        spec = spec.with_tables(tables)
    modes = dict.fromkeys(splits, "memory")
    if loader is not None:
        from bars.data.stream import plan_modes

        rows = {s: int(manifest.get("splits", {}).get(s, {}).get("rows", 0)) for s in splits}
        modes = plan_modes(spec, rows, loader)
    out: dict[str, SplitTensors] = {}
    by_file: dict[str, SplitTensors] = {}
    for name in splits:
        entry = manifest.get("splits", {}).get(name)
        if entry is None:
            raise DataError(f"{folder / MANIFEST}: no split {name!r}; it has {sorted(manifest.get('splits', {}))}")
        path = folder / entry["file"]
        if entry["file"] in by_file:  # e.g. valid = test on BARS's sequential boards: loaded once
            out[name] = by_file[entry["file"]]
            continue
        if not path.is_file():
            raise DataError(f"{path}: split file missing")
        stamps.verify(path, entry, "split")
        if modes[name] == "stream":
            if spec.multi_label or spec.meta:
                raise DataError(f"{path}: loader.mode stream (or auto, for a split this large) does not read "
                                f"several labels or meta columns yet; set loader.mode=memory")
            from bars.data.stream import StreamSplit

            split = StreamSplit(path, spec, buffer_rows=loader.buffer_rows, prefetch=loader.prefetch)
        else:
            split = load_split(folder, spec, name, entry["file"])
        if len(split) != entry["rows"]:
            raise DataError(f"{path}: {len(split)} rows, manifest says {entry['rows']}")
        out[name] = by_file[entry["file"]] = split
    stamps.save()
    return Dataset(folder=folder, spec=spec, manifest=manifest, splits=out, modes=modes)
