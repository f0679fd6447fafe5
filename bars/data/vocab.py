"""The fitted vocabularies of a prepared dataset, kept next to its feature spec: what encodes a raw value.

``bars prepare`` writes one Parquet file per categorical and sequence field into ``<folder>/vocab/``, with two
columns: ``value`` (the raw value, in the dtype the recipe's transform produced: string or integer) and ``count``
(its train count). Row ``i`` is index ``FIRST_KNOWN_INDEX + i`` (``bars.data.spec``): the files are the vocabulary
rule's output (``bars.data.transforms.vocab_order``), so a value that is not in its field's file is OOV (index 1)
and a missing value is padding (index 0). The manifest lists each file under ``vocabularies`` with its row count,
dtype and sha256, and :func:`load_vocabularies` checks them against it and against the feature spec.

The files are written while the vocabularies are taken (an interned field's as soon as its vocabulary is known, so
that its values need not stay in memory through the encoding). They do not change the splits' bytes, nor the
dataset's fingerprint (which hashes the preprocessing config): they record what the preprocessing fitted on train,
so that ``bars predict`` and ``bars export`` encode new rows exactly as the splits were encoded, without re-fitting
anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from bars.data.errors import DataError
from bars.data.spec import FIRST_KNOWN_INDEX, FeatureSpec
from bars.fileio import atomic_write, file_digest

VOCAB_DIR = "vocab"
MANIFEST_KEY = "vocabularies"
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def vocab_file(name: str, position: int) -> str:
    """The file of field ``name`` (the ``position``-th field of the spec), relative to the dataset folder:
    ``vocab/<name>.parquet``, or ``vocab/field<position>.parquet`` when the name is not a safe file name."""
    stem = name if _SAFE.match(name) and len(name) <= 100 else f"field{position}"
    return f"{VOCAB_DIR}/{stem}.parquet"


def write_vocabularies(folder: Path, frames: dict[str, pl.DataFrame], order: list[str]) -> dict[str, dict]:
    """Write ``frames[field]`` (columns ``value``, ``count``; rows in index order) for every field of ``order``
    that has one; return the manifest entries ``{field: {file, values, dtype, sha256}}`` in field order."""
    return {name: write_vocabulary(folder, name, position, frames[name])
            for position, name in enumerate(order) if name in frames}


def write_vocabulary(folder: Path, name: str, position: int, frame: pl.DataFrame) -> dict:
    """Write one field's file (``frame``: ``value``, ``count``, rows in index order; ``position``: the field's in
    the spec) and return its manifest entry ``{file, values, dtype, sha256}``."""
    frame = frame.select(pl.col("value"), pl.col("count").cast(pl.Int64))
    rel = vocab_file(name, position)
    path = Path(folder) / rel
    table = frame.to_arrow()
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return {"file": rel, "values": frame.height, "dtype": str(frame.schema["value"]),
            "sha256": file_digest(path, "sha256")}


def load_vocabularies(folder: Path, manifest: dict, spec: FeatureSpec, verify: bool = True) -> dict[str, pl.Series]:
    """``{field: values in index order}`` for every categorical and sequence field of ``spec``, checked against
    the manifest (file present, sha256) and the spec (``vocab_size == FIRST_KNOWN_INDEX + len(values)``)."""
    folder = Path(folder)
    entries = manifest.get(MANIFEST_KEY)
    if entries is None:
        raise DataError(f"{folder}/manifest.json: no {MANIFEST_KEY!r}: this dataset folder was prepared by an older "
                        f"bars that did not keep its vocabularies; run `make data` for it again (same Parquet bytes, "
                        f"same fingerprint; the vocabulary files are added)")
    out: dict[str, pl.Series] = {}
    for f in spec.features:
        if f.type == "numeric":
            continue
        entry = entries.get(f.name)
        if entry is None:
            raise DataError(f"{folder}/manifest.json: no vocabulary for field {f.name!r} under {MANIFEST_KEY!r}")
        path = folder / entry["file"]
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file of field {f.name!r} missing")
        if verify:
            got = file_digest(path, "sha256")
            if got != entry["sha256"]:
                raise DataError(f"{path}: sha256 mismatch: manifest says {entry['sha256']}, file has {got} "
                                "(modified or corrupted; prepare the dataset again)")
        values = pl.read_parquet(path)["value"]
        if FIRST_KNOWN_INDEX + len(values) != f.vocab_size:
            raise DataError(f"{path}: {len(values)} values, but the feature spec says vocab_size {f.vocab_size} for "
                            f"{f.name!r} (expected {f.vocab_size - FIRST_KNOWN_INDEX} values + padding and OOV)")
        out[f.name] = values
    return out
