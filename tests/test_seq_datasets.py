"""The BARS sequential datasets (AmazonElectronics_x1, TaobaoAd_x1, MicroVideo1.7M_x1) from files of their real
layout, built from the small samples in ../shared/datasets: md5-checked, protocol bars-seq (the test file
validates, loaded once) or the honest holdout variant, shared tables, the group column, pretrained tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import torch
from conftest import SHARED_DATASETS

from bars.config import compose
from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.prepare import prepare
from bars.data.transforms import user_histories

SHARED = SHARED_DATASETS
AMAZON = SHARED / "torchrechub_samples" / "raw" / "amazon-electronics" / "amazon_electronics_sample.csv"
TAOBAO = SHARED / "fuxictr_tiny" / "raw" / "tiny_csv" / "train_sample.csv"
pytestmark = pytest.mark.skipif(not AMAZON.is_file() or not TAOBAO.is_file(), reason="needs ../shared/datasets")


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _joined(df: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    return df.with_columns([pl.col(c).cast(pl.List(pl.String)).list.join("^") for c in cols])


def _write(df: pl.DataFrame, raw: Path, n_train: int) -> dict[str, str]:
    raw.mkdir(parents=True, exist_ok=True)
    df[:n_train].write_csv(raw / "train.csv")
    df[n_train:].write_csv(raw / "test.csv")
    return {k: _md5(raw / f"{k}.csv") for k in ("train", "test")}


@pytest.fixture
def amazon(tmp_path):
    """AmazonElectronics_x1's layout: label,user_id,item_id,cate_id,item_history,cate_history ('^')."""
    ev = pl.read_csv(AMAZON)
    h = user_histories(ev, "user_id", "time", {"item_history": "item_id", "cate_history": "cate_id"}, 100,
                       tiebreak="item_id")
    rng = np.random.default_rng(0)
    df = _joined(h.with_columns(pl.Series("label", rng.integers(0, 2, h.height))), ["item_history", "cate_history"])
    df = df.select("label", "user_id", "item_id", "cate_id", "item_history", "cate_history")
    raw = tmp_path / "raw"
    md5 = _write(df, raw, 80)
    over = [f"paths.data={tmp_path / 'data'}", f"data.raw_dir={raw}", f"data.md5.train={md5['train']}",
            f"data.md5.test={md5['test']}"]
    return over, df


def test_amazonelectronics_x1_bars_seq(amazon):
    over, df = amazon
    out = prepare(compose(["data=amazonelectronics_x1", *over]), quiet=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["valid"]["same_as"] == "test"
    assert manifest["splits"]["train"]["rows"] == 80 and manifest["splits"]["test"]["rows"] == df.height - 80
    ds = load_dataset(out)
    assert ds.splits["valid"] is ds.splits["test"]  # loaded once
    spec = ds.spec
    assert spec["item_history"].share_embedding == "item_id" and spec["cate_history"].share_embedding == "cate_id"
    assert spec["item_history"].max_len == 100 and spec["item_history"].padding == "post"  # FuxiCTR's default
    assert "user_id" in ds.splits["train"].meta and "user_id" not in spec.names
    cfg = compose(["data=amazonelectronics_x1", *over])
    assert cfg.data.protocol_name == "bars-seq" and cfg.data.group_column == "user_id"
    assert cfg.seed == 20222023 and cfg.model.params.embedding_dim == 64


def test_amazonelectronics_x1_holdout_variant_and_checks(amazon, tmp_path):
    over, df = amazon
    out = prepare(compose(["data=amazonelectronics_x1", *over, "data.validation=holdout",
                           "data.protocol_name=holdout", "data.holdout_ratio=0.25"]), quiet=True)
    splits = json.loads((out / "manifest.json").read_text())["splits"]
    assert "same_as" not in splits["valid"] and splits["test"]["rows"] == df.height - 80
    assert splits["train"]["rows"] + splits["valid"]["rows"] == 80 and splits["valid"]["rows"] > 5
    with pytest.raises(DataError, match="protocol_name=bars-seq means validated on the test set"):
        prepare(compose(["data=amazonelectronics_x1", *over, "data.validation=holdout"]), quiet=True)
    with pytest.raises(DataError, match="data.validation=test validates on the test set: label it"):
        prepare(compose(["data=amazonelectronics_x1", *over, "data.protocol_name=null"]), quiet=True)
    with pytest.raises(DataError, match="data.validation: expected one of"):
        prepare(compose(["data=amazonelectronics_x1", *over, "data.validation=train"]), quiet=True)
    bad = [o if not o.startswith("data.md5.train=") else "data.md5.train=" + "0" * 32 for o in over]
    with pytest.raises(DataError, match="train.csv"):
        prepare(compose(["data=amazonelectronics_x1", *bad]), quiet=True)


def test_taobaoad_x1_layout(tmp_path):
    """TaobaoAd_x1's columns: FuxiCTR's tiny Taobao sample with btag and the three '^' histories added."""
    ev = pl.read_csv(TAOBAO, infer_schema_length=0).with_row_index("r")
    rng = np.random.default_rng(1)
    ev = ev.with_columns(pl.Series("btag", rng.choice(["pv", "cart", "fav", "buy"], ev.height)))
    h = user_histories(ev, "userid", "time_stamp", {"cate_his": "cate_id", "brand_his": "brand", "btag_his": "btag"},
                       50, tiebreak="r")
    # time-ordered sample users have few rows: give every row a history from the whole file, too
    df = _joined(h.drop("r"), ["cate_his", "brand_his", "btag_his"]).with_columns(
        pl.when(pl.col("cate_his") == "").then(pl.lit("1^2^3")).otherwise(pl.col("cate_his")).alias("cate_his"))
    raw = tmp_path / "raw"
    md5 = _write(df, raw, 70)
    over = [f"paths.data={tmp_path / 'data'}", f"data.raw_dir={raw}", f"data.md5.train={md5['train']}",
            f"data.md5.test={md5['test']}", "data.min_count=1"]
    ds = load_dataset(prepare(compose(["data=taobaoad_x1", *over]), quiet=True))
    spec = ds.spec
    assert spec.label == "clk" and spec["price"].type == "numeric"
    assert {spec[f].share_embedding for f in ("cate_his", "brand_his", "btag_his")} == {"cate_id", "brand", "btag"}
    seq = ds.splits["train"].features["cate_his"]
    assert seq.shape[1] == 50 and bool(((seq > 0).int().diff(dim=1) >= 0).all())  # pre-padded
    assert ds.splits["valid"] is ds.splits["test"]


def test_microvideo_x1_layout_with_pretrained_tables(tmp_path):
    rng = np.random.default_rng(2)
    n = 120
    items = rng.integers(1000, 1060, n)
    ev = pl.DataFrame({"user_id": rng.integers(0, 12, n), "item_id": items, "cate_id": items % 7,
                       "timestamp": np.arange(n), "is_click": rng.integers(0, 2, n).astype(float)})
    h = user_histories(ev, "user_id", "timestamp", {"clicked_items": "item_id", "clicked_categories": "cate_id"}, 100)
    df = _joined(h, ["clicked_items", "clicked_categories"])
    raw = tmp_path / "raw"
    md5 = _write(df, raw, 90)
    keys = np.arange(1000, 1080)  # the file knows items never seen in train: they join the vocabulary
    with h5py.File(raw / "item_image_emb_dim64.h5", "w") as hf:
        hf.create_dataset("key", data=keys)
        hf.create_dataset("value", data=rng.normal(size=(len(keys), 64)).astype(np.float32))
    over = [f"paths.data={tmp_path / 'data'}", f"data.raw_dir={raw}", f"data.md5.train={md5['train']}",
            f"data.md5.test={md5['test']}"]
    ds = load_dataset(prepare(compose(["data=microvideo_x1", *over]), quiet=True))
    spec = ds.spec
    assert spec["item_id"].pretrained == "pretrained_item_id.parquet" and spec["item_id"].freeze_pretrained
    assert spec["clicked_items"].pretrained_dim == 64 and spec["clicked_categories"].share_embedding == "cate_id"
    assert spec["item_id"].vocab_size >= len(keys) + 2


def test_aliexpress_layout_two_labels(tmp_path):
    """FuxiCTR's tiny_mtl has the AliExpress layout: both labels reach the loader, the holdout validates."""
    mtl = SHARED / "fuxictr_tiny" / "raw" / "tiny_mtl"
    raw = tmp_path / "raw" / "AliExpress_ES"
    raw.mkdir(parents=True)
    for k in ("train", "test"):
        (raw / f"{k}.csv").write_bytes((mtl / f"{k}.csv").read_bytes())
    cfg = compose(["data=aliexpress", "data.country=ES", f"data.raw_dir={tmp_path / 'raw'}",
                   f"paths.data={tmp_path / 'data'}", "data.holdout_ratio=0.2"])
    assert cfg.data.files.train == "AliExpress_ES/train.csv"
    out = prepare(cfg, quiet=True)
    ds = load_dataset(out)
    spec = ds.spec
    assert spec.labels == ("click", "conversion") and len(spec.names) == 16 + 63
    tr = ds.splits["train"]
    assert tr.labels.shape == (len(tr), 2) and tr.label_names == ("click", "conversion")
    assert len(tr) + len(ds.splits["valid"]) == 100 and len(ds.splits["test"]) == 100
    mf = json.loads((out / "manifest.json").read_text())
    assert set(mf["splits"]["train"]["positives_by_label"]) == {"click", "conversion"}


def test_ali_ccp_layout_two_labels(tmp_path):
    """torch-rechub's Ali-CCP samples have the processed layout: click and purchase, sparse and dense fields."""
    src = SHARED / "torchrechub_samples" / "raw" / "ali-ccp"
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in ("train", "val", "test"):
        (raw / f"ali_ccp_{k}.csv").write_bytes((src / f"ali_ccp_{k}_sample.csv").read_bytes())
    ds = load_dataset(prepare(compose(["data=ali_ccp", f"data.raw_dir={raw}", f"paths.data={tmp_path / 'data'}"]),
                              quiet=True))
    spec = ds.spec
    assert spec.labels == ("click", "purchase") and spec["101"].type == "categorical"
    assert spec["D109_14"].type == "numeric" and len(spec.names) == 31
    assert [len(ds.splits[k]) for k in ("train", "valid", "test")] == [100, 50, 50]
    assert bool((ds.splits["train"].labels[:, 1] <= ds.splits["train"].labels[:, 0]).all())


def test_kuaivideo_x1_layout_copies_and_a_pretrained_twin_table(tmp_path):
    """KuaiVideo_x1: item_emb / pos_items_emb / neg_items_emb copy item_id / pos_items / neg_items (copy_from)
    onto a second table loaded from the pretrained file; the id fields keep their own learned table."""
    rng = np.random.default_rng(3)
    n = 150
    ev = pl.DataFrame({"user_id": rng.integers(0, 10, n), "item_id": rng.integers(500, 530, n),
                       "t": np.arange(n), "is_click": rng.integers(0, 2, n).astype(float)})
    h = user_histories(ev.with_columns((pl.col("is_click") == 1).alias("c"), (pl.col("is_click") == 0).alias("nc")),
                       "user_id", "t", {"pos_items": "item_id"}, 100, where="c")
    h = user_histories(h, "user_id", "t", {"neg_items": "item_id"}, 100, where="nc")
    df = _joined(h.select("user_id", "item_id", "is_click", "pos_items", "neg_items"), ["pos_items", "neg_items"])
    raw = tmp_path / "raw"
    md5 = _write(df, raw, 110)
    keys = np.arange(500, 540)
    with h5py.File(raw / "item_visual_emb_dim64.h5", "w") as hf:
        hf.create_dataset("key", data=keys)
        hf.create_dataset("value", data=rng.normal(size=(len(keys), 64)).astype(np.float32))
    over = [f"paths.data={tmp_path / 'data'}", f"data.raw_dir={raw}", f"data.md5.train={md5['train']}",
            f"data.md5.test={md5['test']}", "data.min_count=1"]
    ds = load_dataset(prepare(compose(["data=kuaivideo_x1", *over]), quiet=True))
    spec = ds.spec
    assert spec["item_emb"].pretrained == "pretrained_item_emb.parquet" and spec["item_id"].pretrained == ""
    assert spec["pos_items_emb"].share_embedding == "item_emb" and spec["pos_items"].share_embedding == "item_id"
    assert spec["item_emb"].vocab_size >= len(keys) + 2  # the file's keys join the twin's vocabulary
    tr = ds.splits["train"]
    # a copy encodes the same values: equal ids in item_id are equal ids in item_emb
    pairs = pl.DataFrame({"a": tr.features["item_id"].numpy(), "b": tr.features["item_emb"].numpy()}).unique()
    assert pairs["a"].n_unique() == pairs["b"].n_unique() == pairs.height
    assert bool(((tr.features["pos_items"] > 0) == (tr.features["pos_items_emb"] > 0)).all())
    with pytest.raises(DataError, match="data.copies.item_emb='item_emb'"):
        prepare(compose(["data=kuaivideo_x1", *over, "data.copies.item_emb=item_emb"]), quiet=True)


def test_new_rows_encode_as_the_splits_were(amazon, tmp_path):
    """bars predict's encoder on a sequence dataset: shared tables, pre-padding and the meta column encode the
    raw test file exactly as `make data` encoded the test split."""
    from bars.data.apply import RawEncoder
    from bars.data.prepare import load_recipe

    over, _ = amazon
    cfg = compose(["data=amazonelectronics_x1", *over, "+data.field_options.item_history.padding=pre",
                   "+data.field_options.cate_history.padding=pre"])
    out = prepare(cfg, quiet=True)
    test = load_dataset(out).splits["test"]
    enc = RawEncoder(load_recipe(cfg), out)
    parts = [s for _, s, _ in enc.batches(enc.open(Path(cfg.data.raw_dir) / "test.csv"))]
    for name in enc.spec.names:
        assert torch.equal(torch.cat([p.features[name] for p in parts]), test.features[name]), name
    # the meta column groups the same rows (text ids: interned by make data, hashed for new rows)
    pairs = pl.DataFrame({"a": torch.cat([p.meta["user_id"] for p in parts]).numpy(),
                          "b": test.meta["user_id"].numpy()}).unique()
    assert pairs["a"].n_unique() == pairs["b"].n_unique() == pairs.height > 1
    assert bool((test.features["item_history"][:, -1] > 0).any())  # pre-padded: the latest behaviour last
