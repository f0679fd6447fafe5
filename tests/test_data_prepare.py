"""Preparation end to end on real files: movielens_small, Criteo/Avazu Kaggle slices, tabular, Frappe md5."""

from __future__ import annotations

import json
import shutil
import time

import polars as pl
import pytest

from bars.data.loader import load_dataset
from bars.data.prepare import prepare
from bars.data.sources import verify_checksum
from bars.data.spec import FeatureSpec


def test_movielens_small_builds_and_matches_contract(movielens_folder):
    spec = FeatureSpec.load(movielens_folder / "feature_spec.json")
    assert spec.names == ["user", "movie", "genres", "year", "hour", "weekday"]
    assert spec["genres"].type == "sequence" and spec["genres"].max_len >= 2
    m = json.loads((movielens_folder / "manifest.json").read_text())
    assert sum(s["rows"] for s in m["splits"].values()) == 105_339
    assert 0.78 < m["splits"]["train"]["rows"] / 105_339 < 0.82
    assert m["official_split"] is False and "not the official split" in m["split"]
    tr = pl.read_parquet(movielens_folder / "train.parquet")
    assert tr["user"].min() >= 2  # every train user is known (min count 1)
    assert tr["hour"].max() <= 25 and tr.schema["label"] == pl.Float32
    assert not any(p.name.startswith("_") for p in movielens_folder.iterdir())


def test_reuse_and_fingerprint(data_cfg, tmp_path):
    cfg = data_cfg("data=movielens_small")
    out = prepare(cfg, quiet=True)
    t = time.perf_counter()
    assert prepare(cfg, quiet=True) == out
    assert time.perf_counter() - t < 1.0  # reuse is cheap
    # moving the raw files or changing a training knob keeps the fingerprint
    raw = tmp_path / "elsewhere"
    shutil.copytree(cfg.data.raw_dir, raw)
    assert prepare(data_cfg("data=movielens_small", f"data.raw_dir={raw}", "protocol.embedding_dim=32"), quiet=True) == out
    # a preprocessing knob changes it
    other = prepare(data_cfg("data=movielens_small", "data.min_count=3"), quiet=True)
    assert other != out and other.parent == out.parent
    assert FeatureSpec.load(other / "feature_spec.json")["movie"].vocab_size < \
        FeatureSpec.load(out / "feature_spec.json")["movie"].vocab_size


def test_criteo_x4_from_kaggle_slice(data_cfg, criteo_raw):
    out = prepare(data_cfg("data=criteo_x4_001", f"data.raw_dir={criteo_raw}"), quiet=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["official_split"] is False and sum(s["rows"] for s in m["splits"].values()) == 10_000
    spec = FeatureSpec.load(out / "feature_spec.json")
    assert len(spec.features) == 39 and all(f.type == "categorical" and f.min_count == 10 for f in spec.features)
    tr = pl.read_parquet(out / "train.parquet")
    assert (tr["C3"] == 1).sum() > 0  # rare values -> OOV
    assert m["inputs"][0]["sha256"]
    assert prepare(data_cfg("data=criteo_x4_001", f"data.raw_dir={criteo_raw}"), quiet=True) == out


def test_avazu_x4_from_kaggle_slice(data_cfg, shared_datasets):
    out = prepare(data_cfg("data=avazu_x4_001", f"data.raw_dir={shared_datasets / 'avazu_head10k' / 'raw'}"),
                  quiet=True)
    spec = FeatureSpec.load(out / "feature_spec.json")
    assert "id" not in spec.names and {"hour", "weekday", "weekend"} <= set(spec.names)
    assert len(spec.features) == 24
    # 14102100 is Tuesday 2014-10-21, hour 00: one known value each
    assert spec["weekday"].vocab_size == 3 and spec["hour"].vocab_size == 3


def test_tabular_csv_files_with_all_field_types(data_cfg, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["click,user,price,hist"]
    for i in range(60):
        rows.append(f"{i % 2},u{i % 7},{i * 0.5 if i % 5 else ''},a|b{i % 3}{'|c' if i % 4 == 0 else ''}")
    for split, sl in (("train", slice(1, 41)), ("valid", slice(41, 51)), ("test", slice(51, 61))):
        (raw / f"{split}.csv").write_text("\n".join([rows[0], *rows[sl]]) + "\n")
    cfg = data_cfg("data=tabular", f"data.raw_dir={raw}", "data.files.train=train.csv", "data.files.valid=valid.csv",
                   "data.files.test=test.csv", "data.label=click", "data.categorical=[user]", "data.numeric=[price]",
                   "data.sequence=[hist]")
    ds = load_dataset(prepare(cfg, quiet=True))
    spec = ds.spec
    assert spec.label == "click" and spec["user"].vocab_size == 7 + 2 and spec["hist"].max_len == 3
    tr = ds.splits["train"]
    assert tr.features["price"].dtype.is_floating_point and float(tr.features["price"][0]) == 0.0  # missing -> 0
    assert tr.features["hist"].shape == (40, 3) and int(tr.features["hist"][1, 2]) == 0  # padded
    assert len(ds.splits["valid"]) == 10


def test_tabular_one_parquet_file_with_ratios(data_cfg, tmp_path):
    f = tmp_path / "all.parquet"
    pl.DataFrame({"y": [i % 2 for i in range(1000)], "a": [str(i % 13) for i in range(1000)]}).write_parquet(f)
    ds = load_dataset(prepare(data_cfg("data=tabular", f"data.file={f}", "data.label=y", "data.categorical=[a]",
                                       "data.split_ratios=[0.6,0.2,0.2]"), quiet=True))
    n = {k: len(v) for k, v in ds.splits.items()}
    assert sum(n.values()) == 1000 and 540 < n["train"] < 660
    assert ds.manifest["config"]["params"]["split_seed"] == 2021


def test_frappe_x1_csvs_verify_against_published_md5(shared_datasets):
    d = shared_datasets / "frappe_x1" / "derived"
    if not d.is_dir():
        pytest.skip("Frappe_x1 CSVs not available")
    verify_checksum(d / "valid.csv.gz", "88d51bf2173505436d3a8f78f2a59da8")
    verify_checksum(d / "test.csv.gz", "3470f6d32713dc5f7715f198ca7c612a")


def test_frappe_x1_reads_official_csvs_and_libsvm(data_cfg, tmp_path, shared_datasets):
    """Frappe is read from ../shared via symlinks in tmp_path (never copied); valid stands in for train."""
    fx = shared_datasets / "frappe_x1"
    if not fx.is_dir():
        pytest.skip("Frappe_x1 not available")
    specs = []
    for ext, src in (("csv", fx / "derived"), ("libsvm", fx / "raw")):
        raw = tmp_path / ext
        raw.mkdir()
        for split, name in (("train", "valid"), ("valid", "valid"), ("test", "test")):
            (raw / f"{split}.{ext}.gz").symlink_to(src / f"{name}.{ext}.gz")
        out = prepare(data_cfg("data=frappe_x1", f"data.raw_dir={raw}", "data.md5.train=88d51bf2173505436d3a8f78f2a59da8"),
                      quiet=True)
        specs.append(FeatureSpec.load(out / "feature_spec.json"))
        assert json.loads((out / "manifest.json").read_text())["splits"]["test"]["rows"] == 28_860
    assert [f.vocab_size for f in specs[0].features] == [f.vocab_size for f in specs[1].features]
