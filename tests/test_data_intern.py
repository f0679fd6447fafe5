"""Early interning (string categorical fields interned from the parsed Arrow batch, in the reader's thread,
bars.data.engine._intern_early) and the staged batch size are speed-ups only: the prepared bytes must be exactly
those of the late path (interning after the recipe's transform) at any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from bars.data import engine
from bars.data.counting import Dictionary
from bars.data.engine import Field, Recipe, _early_columns
from bars.data.recipes import criteo_recipe
from bars.data.sources import Source
from bars.data.synthetic import generate_criteo
from bars.fileio import file_digest


def test_intern_gives_the_ids_encode_gives():
    d = Dictionary()
    first = pl.DataFrame({"c": ["b", None, "a", "b", "c"]}).select(d.encode("c"))["c"]
    later = pa.chunked_array([pa.array(["c", "d", None]), pa.array(["a", "d", "b"])])
    got = d.intern(later)
    assert got.type == pa.uint32()
    ids = dict(zip(["b", "a", "c"], first.drop_nulls().unique(maintain_order=True).to_list()))
    assert got.to_pylist() == [ids["c"], got[1].as_py(), None, ids["a"], got[1].as_py(), ids["b"]]
    assert got[1].as_py() not in ids.values()  # a new value gets a new id
    assert d.values(pl.Series([got[1].as_py()], dtype=pl.UInt32)).to_list() == ["d"]
    assert d.intern(pa.array([], pa.string())).to_pylist() == []


def test_which_columns_are_interned_early(tmp_path):
    schema = pa.schema([("label", pa.float64()), ("s", pa.string()), ("t", pa.string()), ("n", pa.int64())])
    fields = [Field("s"), Field("t"), Field("n"), Field("m", "meta")]
    src = Source(tmp_path / "x.csv")
    plain = Recipe("x", [src], fields)
    assert _early_columns(plain, src, schema, None) == {"s", "t"}  # no transform: every string categorical
    assert _early_columns(plain, src, schema, {"t"}) == {"t"}  # only those the first batch interned
    undeclared = Recipe("x", [src], fields, transform=lambda df: df)
    assert _early_columns(undeclared, src, schema, None) == set()  # it might read any column
    declared = Recipe("x", [src], fields, transform=lambda df: df, transform_columns=("t",))
    assert _early_columns(declared, src, schema, None) == {"s"}
    libsvm = Source(tmp_path / "x.libsvm", fmt="libsvm")
    assert _early_columns(plain, libsvm, schema, None) == set()  # its tokens are stripped first


def _build(raw: Path, out: Path, rows: int, early: bool) -> dict[str, str]:
    data = {"name": "synthetic", "integer_mode": "bucket", "min_count": 2, "split_seed": 2021, "rows": rows,
            "split_ratios": [0.8, 0.1, 0.1], "missing": "oov"}
    recipe = criteo_recipe(data, raw.parent, raw_file=raw)
    if not early:
        recipe.transform_columns = None  # an undeclared transform: every string is interned after it
    out.mkdir()
    manifest = engine.build(recipe, out, "fp")
    digests = {p.relative_to(out).as_posix(): file_digest(p, "sha256") for p in sorted(out.rglob("*"))
               if p.is_file() and p.name != "manifest.json"}
    digests["manifest.splits"] = json.dumps(manifest["splits"], sort_keys=True)
    return digests


@pytest.mark.parametrize("batch_rows", [1 << 12, 1 << 18])
def test_early_interning_writes_the_same_bytes(tmp_path, monkeypatch, batch_rows):
    raw = generate_criteo(tmp_path / "raw" / "criteo.txt", 20_000, seed=3)
    monkeypatch.setattr(engine, "STAGE_BATCH_ROWS", batch_rows)
    early = _build(raw, tmp_path / "early", 20_000, early=True)
    monkeypatch.setattr(engine, "STAGE_BATCH_ROWS", 1 << 16)  # the reader's default batch, the path before
    late = _build(raw, tmp_path / "late", 20_000, early=False)
    assert len(early) > 40 and early == late
