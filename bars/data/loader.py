"""Prepared dataset folder -> contiguous tensors, verified; batches by slicing a seeded permutation.

``load_dataset(folder)`` checks every split file's sha256 against manifest.json and the feature spec against
the Parquet schema (names and dtypes), then reads whole columns into tensors: categorical int32 [N], numeric
float32 [N], sequence int32 [N, L], label float32 [N]. A split that does not fit in memory (or every split, when
asked: ``loader.mode=stream``) is a :class:`bars.data.stream.StreamSplit` instead, with the same interface.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bars.data.errors import DataError
from bars.data.spec import FeatureSpec, SpecError
from bars.data.writer import MANIFEST, SPEC
from bars.fileio import file_digest

if TYPE_CHECKING:
    from bars.data.stream import LoaderConfig, StreamSplit


@dataclass
class SplitTensors:
    features: dict[str, torch.Tensor]
    label: torch.Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: str | torch.device) -> SplitTensors:
        """Move all tensors to ``device`` once (returns a new SplitTensors)."""
        return SplitTensors({k: v.to(device) for k, v in self.features.items()}, self.label.to(device))

    def batches(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, device: str | torch.device | None = None
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Yield ``(features, label)`` batches. Shuffled batches are slices of one ``torch.randperm`` drawn
        from a generator seeded with ``seed`` (pass e.g. ``seed + epoch`` for a new order each epoch);
        unshuffled batches are contiguous views. The last batch may be smaller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
                y = self.label[sl]
            else:
                idx = perm[start:start + batch_size]
                feats = {k: v.index_select(0, idx) for k, v in self.features.items()}
                y = self.label.index_select(0, idx)
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
    """The Parquet schema must hold exactly the spec's fields (+ label) with the contract's dtypes."""
    names = set(schema.names)
    want = set(spec.names) | {spec.label}
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
    if schema.field(spec.label).type != pa.float32():
        raise SpecError(f"{where}: label {spec.label!r} has type {schema.field(spec.label).type}, expected float")


def _column(table: pa.Table, name: str, kind: str, max_len: int) -> torch.Tensor:
    col = table.column(name).combine_chunks()
    if kind == "sequence":
        arr = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.int32).reshape(len(col), max_len)
    else:
        arr = col.to_numpy(zero_copy_only=False)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, copy=True, order="C")
    return torch.from_numpy(arr)


def split_from_table(table: pa.Table, spec: FeatureSpec, where: str) -> SplitTensors:
    """An encoded table (the spec's fields + label, the contract's dtypes) as tensors: what a split file holds,
    and what ``bars.data.apply`` makes of new raw rows."""
    check_schema(spec, table.schema, where)
    feats = {f.name: _column(table, f.name, f.type, f.max_len) for f in spec.features}
    label = _column(table, spec.label, "numeric", 0)
    return SplitTensors(feats, label)


def load_split(folder: Path, spec: FeatureSpec, name: str) -> SplitTensors:
    path = Path(folder) / f"{name}.parquet"
    return split_from_table(pq.read_table(path), spec, str(path))


def load_dataset(folder: str | Path, splits=("train", "valid", "test"), verify: bool = True,
                 loader: LoaderConfig | None = None) -> Dataset:
    """Load a prepared dataset folder (see bars.data.prepare.prepare). ``loader`` (the ``loader:`` config block,
    default: everything in memory) decides per split whether it is read into tensors or streamed
    (``bars.data.stream.plan_modes``); ``Dataset.modes`` says which."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: no {MANIFEST}; not a prepared dataset folder (run bars prepare)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{folder / MANIFEST}: not valid JSON ({e})") from None
    spec = FeatureSpec.load(folder / SPEC)
    modes = dict.fromkeys(splits, "memory")
    if loader is not None:
        from bars.data.stream import plan_modes

        rows = {s: int(manifest.get("splits", {}).get(s, {}).get("rows", 0)) for s in splits}
        modes = plan_modes(spec, rows, loader)
    out = {}
    for name in splits:
        entry = manifest.get("splits", {}).get(name)
        if entry is None:
            raise DataError(f"{folder / MANIFEST}: no split {name!r}; it has {sorted(manifest.get('splits', {}))}")
        path = folder / entry["file"]
        if not path.is_file():
            raise DataError(f"{path}: split file missing")
        if verify:
            got = file_digest(path, "sha256")
            if got != entry["sha256"]:
                raise DataError(f"{path}: sha256 mismatch: manifest says {entry['sha256']}, file has {got} "
                                "(modified or corrupted; prepare the dataset again)")
        if modes[name] == "stream":
            from bars.data.stream import StreamSplit

            split = StreamSplit(path, spec, buffer_rows=loader.buffer_rows, prefetch=loader.prefetch)
        else:
            split = load_split(folder, spec, name)
        if len(split) != entry["rows"]:
            raise DataError(f"{path}: {len(split)} rows, manifest says {entry['rows']}")
        out[name] = split
    return Dataset(folder=folder, spec=spec, manifest=manifest, splits=out, modes=modes)
