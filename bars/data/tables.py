"""Tables shared by several fields and pretrained tables: the vocabulary a group of fields shares, the keys of a
pretrained file joining it, and the ``pretrained_<field>.parquet`` rows the loader hands to the models.

FuxiCTR's rules, followed here: a field with ``share_embedding`` merges its own vocabulary (its own min count)
into the owner's, and every field of the group then uses the merged vocabulary; a field with
``pretrained_emb`` adds the file's keys to its vocabulary, so a value first seen in valid/test still finds its
vector. bars orders the merged vocabulary by its rule (bars.data.transforms.vocab_order: the summed train count
descending, then value), then the file's remaining keys by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bars.data import transforms as T
from bars.data.errors import DataError
from bars.data.sources import verify_checksum
from bars.data.spec import FIRST_KNOWN_INDEX
from bars.fileio import file_digest


@dataclass
class Pretrained:
    """A file of pretrained vectors for a field's table: ``.h5`` (datasets ``key`` and ``value``, as the BARS
    KuaiVideo/MicroVideo files), ``.npz`` (arrays ``key`` and ``value``) or ``.parquet`` (columns ``key`` and
    ``value``, a list of floats). Its keys join the field's vocabulary (FuxiCTR expands the vocabulary with them,
    so items first seen in valid/test still get their vectors); ``freeze`` keeps the table fixed in training."""

    path: Path
    freeze: bool = True
    md5: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)



def share_groups(fields: list) -> dict[str, list]:
    """Table owner -> its fields (owner first, then the fields sharing its table, in recipe order), checked."""
    by_name = {f.name: f for f in fields}
    groups: dict[str, list] = {}
    for f in fields:
        if f.type not in ("categorical", "sequence"):
            if f.share_embedding or f.pretrained is not None:
                raise DataError(f"field {f.name!r} ({f.type}): share_embedding and pretrained are for categorical and "
                                "sequence fields")
            continue
        if f.share_embedding:
            o = by_name.get(f.share_embedding)
            if o is None or o.type not in ("categorical", "sequence") or o.share_embedding:
                raise DataError(f"field {f.name!r}: share_embedding={f.share_embedding!r} must name a categorical or "
                                f"sequence field that owns its table; fields are {list(by_name)}")
            if f.pretrained is not None:
                raise DataError(f"field {f.name!r}: shares the table of {o.name!r} and has a pretrained file of its "
                                "own; give the pretrained file to the owner")
            groups.setdefault(o.name, [o]).append(f)
        else:
            groups.setdefault(f.name, [f])
    return groups


def read_pretrained(p: Pretrained) -> tuple[pl.Series, np.ndarray]:
    """``(keys, vectors)`` of a pretrained file (see :class:`Pretrained`), md5-checked when pinned; bad content
    (no key/value, shapes that disagree, duplicate keys, non-finite values) names the file and what was expected."""
    path = p.path
    if not path.is_file():
        raise DataError(f"{path}: pretrained embedding file not found")
    if p.md5:
        verify_checksum(path, p.md5, "md5")
    try:
        if path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as hf:
                missing = [k for k in ("key", "value") if k not in hf]
                if missing:
                    raise DataError(f"{path}: no dataset {missing} in the HDF5 file (it has {sorted(hf.keys())}): "
                                    "expected 'key' [n] and 'value' [n, dim]")
                keys, values = hf["key"][:], hf["value"][:]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("key", "value") if k not in z]
                if missing:
                    raise DataError(f"{path}: no array {missing} (it has {sorted(z.files)}): expected 'key' and 'value'")
                keys, values = z["key"], z["value"]
        elif path.suffix == ".parquet":
            t = pq.read_table(path)
            missing = [k for k in ("key", "value") if k not in t.column_names]
            if missing:
                raise DataError(f"{path}: no column {missing} (it has {t.column_names}): expected 'key' and 'value'")
            keys = t.column("key").to_numpy(zero_copy_only=False)
            values = np.stack(t.column("value").to_pylist()) if t.num_rows else np.zeros((0, 0))
        else:
            raise DataError(f"{path}: unknown pretrained format {path.suffix!r}: expected .h5, .npz or .parquet")
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the pretrained embeddings ({e})") from None
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] != len(keys) or values.shape[0] == 0:
        raise DataError(f"{path}: 'value' has shape {values.shape} for {len(keys)} keys: expected [n keys, dim], n >= 1")
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise DataError(f"{path}: row {row} (key {keys[row]!r}) has a non-finite value: expected finite floats")
    if keys.dtype.kind in "SO":
        keys = np.array([k.decode() if isinstance(k, bytes) else str(k) for k in keys], dtype=object)
    ks = pl.Series("key", keys)
    dup = ks.is_duplicated()
    if dup.any():
        raise DataError(f"{path}: key {ks[int(dup.arg_max())]!r} appears more than once: expected unique keys")
    return ks, values


def _common_dtype(series: list[pl.Series]) -> pl.DataType:
    dtypes = {s.dtype for s in series}
    if len(dtypes) == 1:
        return dtypes.pop()
    if all(d.is_integer() for d in dtypes):
        return pl.Int64
    return pl.String


def _cast_values(s: pl.Series, dtype: pl.DataType, where: str) -> pl.Series:
    if s.dtype == dtype:
        return s
    out = s.cast(dtype, strict=False)
    bad = out.is_null() & s.is_not_null()
    if bad.any():
        raise DataError(f"{where}: value {s[int(bad.arg_max())]!r} cannot be read as {dtype}, the type of the "
                        "vocabulary it joins")
    return out


def group_vocab(members: list, own: dict[str, pl.DataFrame],
                 pretrained: tuple[pl.Series, np.ndarray] | None, where: str) -> pl.Series:
    """The one vocabulary of fields sharing a table: the union of each field's own vocabulary (its own min_count,
    FuxiCTR's merge), ordered by the summed train count descending, then value; then the pretrained keys not in it
    (FuxiCTR adds them so rows first seen in valid/test keep their vector), by value."""
    parts = [own[f.name] for f in members]
    dtype = _common_dtype([p["value"] for p in parts] + ([pretrained[0]] if pretrained is not None else []))
    frames = [p.select(_cast_values(p["value"], dtype, where).alias("value"), pl.col("count").cast(pl.Int64))
              for p in parts]
    merged = T.vocab_order(pl.concat(frames).group_by("value").agg(pl.col("count").sum()), "value", 1)["value"]
    if pretrained is not None:
        keys = _cast_values(pretrained[0], dtype, where)
        extra = keys.filter(~keys.is_in(merged.implode())).sort()
        merged = pl.concat([merged, extra])
    return merged.rename("value")


def encode_joined(col: str, values: pl.Series, sequence: bool, max_len: int = 0,
                   padding: str = "post", *, missing: str) -> tuple[pl.Expr, pl.Expr]:
    """Encode ``col`` against ``values`` after casting the column to the vocabulary's dtype (fields of a shared
    table whose raw types differ, e.g. integer ids and string tokens, meet as strings)."""
    x = pl.col(col)
    if sequence:
        x = x.list.eval(pl.element().cast(values.dtype))
    else:
        x = x.cast(values.dtype)
    tmp = f"__{col}"
    enc = (T.encode_sequence(tmp, values, max_len, padding) if sequence
           else T.encode_categorical(tmp, values, missing=missing))
    return enc.alias(col), x.alias(tmp)


def write_table(out: Path, name: str, vocab: pl.Series, keys: pl.Series, vectors: np.ndarray,
                src: Pretrained) -> dict:
    """``pretrained_<field>.parquet``: (index int32, vector fixed-size list<float32>) for every key, by index."""
    lookup = pl.DataFrame({"value": vocab, "index": np.arange(FIRST_KNOWN_INDEX, FIRST_KNOWN_INDEX + len(vocab),
                                                              dtype=np.int32)})
    k = _cast_values(keys, vocab.dtype, str(src.path))
    idx = pl.DataFrame({"value": k}).join(lookup, on="value", how="left", maintain_order="left")["index"].to_numpy()
    order = np.argsort(idx, kind="stable")
    dim = int(vectors.shape[1])
    flat = pa.array(np.ascontiguousarray(vectors[order]).reshape(-1), type=pa.float32())
    table = pa.table({"index": pa.array(idx[order].astype(np.int32)),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
    dst = out / f"pretrained_{name}.parquet"
    pq.write_table(table, dst, compression="lz4")
    return {"file": dst.name, "rows": len(idx), "dim": dim, "source": src.path.name,
            "freeze": bool(src.freeze), "bytes": dst.stat().st_size, "sha256": file_digest(dst, "sha256")}
