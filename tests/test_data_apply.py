"""The fitted preprocessing kept by `make data` (vocabulary files) and its application to new raw files
(bars.data.apply): the same bytes as the prepared splits, OOV for unseen values, file:line errors."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from _movielens import movielens_raw_splits

from bars.data import transforms as T
from bars.data.apply import RawEncoder
from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.prepare import dataset_fingerprint, load_recipe, prepare
from bars.data.spec import OOV_INDEX, PAD_INDEX
from bars.data.vocab import MANIFEST_KEY, load_vocabularies


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    from bars.config import compose

    root = tmp_path_factory.mktemp("ml_apply")
    cfg = compose(["data=movielens_small", f"paths.data={root / 'data'}"])
    folder = prepare(cfg, quiet=True)
    return {"cfg": cfg, "folder": folder, "root": root, "raw": movielens_raw_splits(),
            "ds": load_dataset(folder)}


def _encode_all(enc: RawEncoder, path: Path, keep=()) -> tuple[dict[str, torch.Tensor], torch.Tensor, list]:
    parts = list(enc.batches(enc.open(path, keep=keep)))
    feats = {n: torch.cat([s.features[n] for _, s, _ in parts]) for n in enc.spec.names}
    return feats, torch.cat([s.label for _, s, _ in parts]), [k for _, _, k in parts]


def test_make_data_keeps_one_vocabulary_file_per_field(ml):
    folder = ml["folder"]
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = manifest[MANIFEST_KEY]
    spec = ml["ds"].spec
    assert list(entries) == [f.name for f in spec.features if f.type != "numeric"]
    vocabs = load_vocabularies(folder, manifest, spec)
    for f in spec.features:
        assert entries[f.name]["file"] == f"vocab/{f.name}.parquet"
        assert len(vocabs[f.name]) == f.vocab_size - 2 == entries[f.name]["values"]
    user = pl.read_parquet(folder / "vocab" / "user.parquet")
    assert user.columns == ["value", "count"] and user["count"].is_sorted(descending=True)
    # index 2 + i is row i: the most frequent train user gets index 2
    train = ml["raw"]["train"]
    top = train.group_by("userId").len().sort(["len", "userId"], descending=[True, False])["userId"][0]
    assert user["value"][0] == top and int(ml["ds"].splits["train"].features["user"].max()) == len(user) + 1


def test_a_folder_without_vocabularies_is_rebuilt_to_the_same_bytes(ml, tmp_path):
    from bars.config import compose

    cfg = compose(["data=movielens_small", f"paths.data={tmp_path / 'data'}"])
    folder = prepare(cfg, quiet=True)
    before = json.loads((folder / "manifest.json").read_text())
    old = {k: v for k, v in before.items() if k != MANIFEST_KEY}  # as an older bars wrote it
    (folder / "manifest.json").write_text(json.dumps(old))
    shutil.rmtree(folder / "vocab")
    with pytest.raises(DataError, match="did not keep its vocabularies"):
        load_vocabularies(folder, old, ml["ds"].spec)
    assert prepare(cfg, quiet=True) == folder and folder.name == dataset_fingerprint(load_recipe(cfg))
    after = json.loads((folder / "manifest.json").read_text())
    assert after["splits"] == before["splits"] and after[MANIFEST_KEY] == before[MANIFEST_KEY]
    # a changed vocabulary file is caught by its checksum
    p = folder / "vocab" / "year.parquet"
    pl.read_parquet(p).reverse().write_parquet(p)
    with pytest.raises(DataError, match=r"year.parquet: sha256 mismatch"):
        load_vocabularies(folder, after, ml["ds"].spec)


def test_raw_rows_of_every_split_encode_to_the_split_files(ml, tmp_path):
    enc = RawEncoder(load_recipe(ml["cfg"]), ml["folder"])
    for k, rows in ml["raw"].items():
        # other column order, an extra column, gzip: the header names the columns
        path = tmp_path / f"{k}.csv.gz"
        with gzip.open(path, "wb") as f:
            rows.with_columns(pl.lit("x").alias("extra")).select(
                "extra", "timestamp", "rating", "movieId", "userId").write_csv(f)
        feats, label, kept = _encode_all(enc, path, keep=["userId", "extra"])
        ref = ml["ds"].splits[k]
        for n in enc.spec.names:
            assert torch.equal(feats[n], ref.features[n]), (k, n)
        assert torch.equal(label, ref.label)
        ids = np.concatenate([t.column("userId").to_numpy() for t in kept])
        assert np.array_equal(ids, rows["userId"].to_numpy())


def test_parquet_input_and_a_file_without_label(ml, tmp_path):
    enc = RawEncoder(load_recipe(ml["cfg"]), ml["folder"])
    test = ml["raw"]["test"]
    p = tmp_path / "test.parquet"
    test.drop("rating").write_parquet(p)
    raw = enc.open(p)
    assert not raw.has_label
    feats, label, _ = _encode_all(enc, p)
    assert torch.isnan(label).all()
    for n in enc.spec.names:
        assert torch.equal(feats[n], ml["ds"].splits["test"].features[n])


def test_unseen_values_are_oov_and_missing_values_padding(ml, tmp_path):
    enc = RawEncoder(load_recipe(ml["cfg"]), ml["folder"])
    p = tmp_path / "new.csv"
    p.write_text("userId,movieId,timestamp\n999999,1,964982703\n1,,964982703\n1,1,\n")
    feats, label, _ = _encode_all(enc, p)
    assert feats["user"].tolist()[0] == OOV_INDEX and feats["user"].tolist()[1] >= 2
    assert feats["movie"].tolist()[1] == PAD_INDEX  # missing movie: padding, and no genres/year from the join
    assert feats["genres"][1].tolist() == [PAD_INDEX] * enc.spec["genres"].max_len
    assert feats["year"].tolist()[1] == PAD_INDEX and feats["hour"].tolist()[2] == PAD_INDEX
    assert torch.isnan(label).all()


def test_bad_files_are_clear_errors(ml, tmp_path):
    enc = RawEncoder(load_recipe(ml["cfg"]), ml["folder"])
    p = tmp_path / "a.csv"
    p.write_text("userId,timestamp\n1,964982703\n")
    with pytest.raises(DataError, match=r"a.csv:1: header lacks columns \['movieId'\].*userId, movieId, timestamp "
                                        r"\(label 'rating' optional\)"):
        enc.open(p)
    p.write_text("userId,movieId,timestamp\n1,1,964982703\n2,abc,964982703\n")
    with pytest.raises(DataError, match=r"a.csv:3: column 'movieId': expected an integer or empty, got 'abc'"):
        _encode_all(enc, p)
    p.write_text("userId,movieId,timestamp,rating\n1,1,964982703,four\n")
    with pytest.raises(DataError, match=r"a.csv:2: column 'rating': expected a number"):
        _encode_all(enc, p)
    q = tmp_path / "b.parquet"
    pl.DataFrame({"userId": ["1", "x2"], "movieId": [1, 2], "timestamp": [1, 2]}).write_parquet(q)
    with pytest.raises(DataError, match=r"b.parquet: row 2: column 'userId': expected an integer \(int64\), got 'x2'"):
        _encode_all(enc, q)
    with pytest.raises(DataError, match=r"keep=id: columns \['id'\] are not in"):
        enc.open(p, keep=["id"])
    with pytest.raises(DataError, match=r"c.json: cannot tell the format"):
        (tmp_path / "c.json").write_text("{}")
        enc.open(tmp_path / "c.json")
    with pytest.raises(DataError, match="file not found"):
        enc.open(tmp_path / "missing.csv")


def test_headerless_criteo_rows_without_label_encode_to_the_test_split(data_cfg, criteo_raw, tmp_path):
    """The Kaggle layout has no header; a file of its 39 feature columns (Kaggle's test.txt layout) is read as the
    raw columns without the label, bucketed and encoded like the training rows."""
    cfg = data_cfg("data=criteo_x4_001", f"data.raw_dir={criteo_raw}")
    folder = prepare(cfg, quiet=True)
    ds = load_dataset(folder, splits=("test",))
    with gzip.open(criteo_raw / "train.txt.gz", "rt") as f:
        lines = f.read().splitlines()
    ids = T.assign_split(0, len(lines), int(cfg.data.split_seed), tuple(cfg.data.split_ratios))
    test = [line.split("\t", 1)[1] for line, i in zip(lines, ids) if i == 2]
    p = tmp_path / "test.txt"
    p.write_text("\n".join(test) + "\n")
    enc = RawEncoder(load_recipe(cfg), folder)
    raw = enc.open(p)
    assert not raw.has_label and not raw.source.header
    feats, _, _ = _encode_all(enc, p)
    for n in enc.spec.names:
        assert torch.equal(feats[n], ds.splits["test"].features[n]), n


def test_tabular_numeric_and_sequence_fields(data_cfg, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["click,user,price,hist"] + [
        f"{i % 2},u{i % 7},{i * 0.5 if i % 5 else ''},a|b{i % 3}{'|c' if i % 4 == 0 else ''}" for i in range(60)]
    (raw / "all.csv").write_text("\n".join(rows) + "\n")
    cfg = data_cfg("data=tabular", f"data.raw_dir={raw}", "data.file=all.csv", "data.label=click",
                   "data.categorical=[user]", "data.numeric=[price]", "data.sequence=[hist]")
    folder = prepare(cfg, quiet=True)
    ds = load_dataset(folder)
    enc = RawEncoder(load_recipe(cfg), folder)
    feats, label, _ = _encode_all(enc, raw / "all.csv")
    ids = T.assign_split(0, 60, int(cfg.data.split_seed), (0.8, 0.1, 0.1))
    for i, k in enumerate(T.SPLITS):
        sel = torch.from_numpy(np.flatnonzero(ids == i))
        for n in enc.spec.names:
            assert torch.equal(feats[n].index_select(0, sel), ds.splits[k].features[n]), (k, n)
        assert torch.equal(label.index_select(0, sel), ds.splits[k].label)
