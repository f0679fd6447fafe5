"""movielens_seq on a fresh clone: every history holds only the user's movies rated strictly before the rating
(no leakage), oldest first, the most recent kept; the rows and the split are movielens_small's; history=false
is the same data without the history fields; a flat model trains on it."""

from __future__ import annotations

import runpy
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from bars.config import PROJECT_ROOT, compose, to_container
from bars.data.loader import load_dataset
from bars.data.prepare import prepare
from bars.data.sources import read_batches

RAW = PROJECT_ROOT / "datasets" / "movielens_small" / "raw"


@pytest.fixture(scope="module")
def transformed() -> pl.DataFrame:
    """The recipe's rows before encoding (raw ids), exactly what the engine encodes."""
    cfg = compose(["data=movielens_seq", "data.history_max_len=20"])
    data = to_container(cfg.data)
    recipe = runpy.run_path(str(PROJECT_ROOT / data["recipe"]))["recipe"](data, RAW)
    src = recipe.sources[0]
    parts = [recipe.transform(pl.from_arrow(b)) for _, b in read_batches(src)]
    return pl.concat(parts)


def test_histories_hold_only_strictly_earlier_ratings(transformed):
    import io
    import zipfile

    with zipfile.ZipFile(RAW / "ml-latest-small.zip") as z:
        ratings = pl.read_csv(io.BytesIO(z.read("ml-latest-small/ratings.csv")))
    df = transformed.with_columns(ratings["timestamp"].alias("t"))  # rows keep the file's order
    assert df.height == ratings.height == 105_339
    assert (df["user"] == ratings["userId"]).all() and (df["movie"] == ratings["movieId"]).all()
    when = ratings.select(pl.col("userId").alias("user"), pl.col("movieId").alias("h"), pl.col("timestamp").alias("ht"))
    hist = (df.with_row_index("row").select("row", "user", "t", pl.col("hist_movies").alias("h"))
            .explode("h").drop_nulls("h").with_columns(pl.int_range(pl.len()).over("row").alias("pos")))
    joined = hist.join(when, on=["user", "h"], how="left")
    assert joined["ht"].null_count() == 0  # every history movie was rated by the same user
    assert (joined["ht"] < joined["t"]).all()  # strictly before: no rating at the same second or later
    ordered = joined.sort(["row", "pos"]).with_columns(pl.col("ht").diff().over("row").alias("d"))
    assert (ordered["d"].drop_nulls() >= 0).all()  # oldest first
    # complete: the number of strictly earlier ratings (rank "min" - 1), capped at 20, and the most recent ones
    counts = df.with_columns((pl.col("t").rank("min").over("user") - 1).alias("n"))
    assert (counts["hist_movies"].list.len() == counts["n"].clip(upper_bound=20)).all()
    earlier = (df.with_row_index("row").with_columns((pl.col("t") - 1).alias("t1")).sort("t1")
               .join_asof(when.sort("ht"), left_on="t1", right_on="ht", by="user", strategy="backward",
                          check_sortedness=False))
    last = joined.group_by("row").agg(pl.col("ht").max().alias("hlast")).join(earlier.select("row", "ht"), on="row")
    assert last.height == counts.filter(pl.col("n") > 0).height
    assert (last["hlast"] == last["ht"]).all()
    # genres are aligned with the movies
    assert (df["hist_movies"].list.len() == df["hist_genres"].list.len()).all()
    assert df.filter(pl.col("hist_movies").list.len() > 0).height > 100_000


def test_split_and_rows_are_movielens_small(tmp_path):
    seq = prepare(compose(["data=movielens_seq", f"paths.data={tmp_path}"]), quiet=True)
    small = prepare(compose(["data=movielens_small", f"paths.data={tmp_path}"]), quiet=True)
    flat = prepare(compose(["data=movielens_seq", "data.history=false", f"paths.data={tmp_path}"]), quiet=True)
    assert len({seq.name, small.name, flat.name}) == 3  # different fingerprints
    for split in ("train", "valid", "test"):
        a, b = pq.read_table(seq / f"{split}.parquet"), pq.read_table(small / f"{split}.parquet")
        for col in ("user", "label"):
            assert a.column(col).equals(b.column(col)), (split, col)
        # movie's table is shared with hist_movies (one merged vocabulary): other indices, the same movies, and
        # movies movielens_small has as OOV (1) may be known from training histories
        pairs = pl.DataFrame({"seq": a.column("movie").to_numpy(), "small": b.column("movie").to_numpy()}).unique()
        assert pairs["seq"].n_unique() == pairs.height, split
        known = pairs.filter(pl.col("small") != 1)
        assert known["small"].n_unique() == known.height, split
    ds = load_dataset(seq)
    spec = ds.spec
    assert spec["hist_movies"].share_embedding == "movie" and spec["hist_movies"].padding == "pre"
    assert spec["hist_genres"].share_embedding == "genre" and spec["hist_movies"].max_len == 50
    assert set(load_dataset(flat).spec.names) == set(spec.names) - {"hist_movies", "hist_genres"}
    hist = ds.splits["train"].features["hist_movies"]
    # pre-padded: a row's padding (0) comes before its values
    nz = (hist > 0).int()
    assert bool((nz[:, 1:] >= nz[:, :-1]).all())


def test_a_flat_model_trains_on_movielens_seq(tmp_path):
    from bars.run import train_one

    cfg = compose(["model=dnn", "data=movielens_seq", f"paths.data={tmp_path / 'data'}", "data.rows=6000",
                   "tracking.enabled=false", "train.max_epochs=1", "model.params.hidden_units=[16]",
                   f"paths.checkpoints={tmp_path / 'ck'}", "train.num_threads=1"])
    r = train_one(cfg, quiet=True)
    assert 0.5 < r.metrics["test_auc"] <= 1 and 0.4 < r.metrics["test_gauc"] <= 1
    assert Path(r.checkpoint).is_file()


def test_user_histories_match_a_brute_force_count():
    import numpy as np

    from bars.data.transforms import user_histories

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        df = pl.DataFrame({"u": rng.integers(0, 4, n), "t": rng.integers(0, 6, n), "i": rng.integers(0, 9, n),
                           "g": [f"g{x}" for x in rng.integers(0, 3, n)]})
        ml = int(rng.integers(1, 5))
        df = df.with_columns(pl.Series("c", rng.random(n) < 0.5))
        out = user_histories(df, "u", "t", {"hi": "i", "hg": "g"}, ml, tiebreak="i")
        assert out.columns == ["u", "t", "i", "g", "c", "hi", "hg"]
        clicked = user_histories(df, "u", "t", {"hc": "i"}, ml, tiebreak="i", where="c")
        rows = df.with_row_index("r").rows(named=True)
        for r, hi, hg, hc in zip(rows, out["hi"].to_list(), out["hg"].to_list(), clicked["hc"].to_list(), strict=True):
            prev = sorted((x for x in rows if x["u"] == r["u"] and x["t"] < r["t"]),
                          key=lambda x: (x["t"], x["i"], x["r"]))
            assert hi == [x["i"] for x in prev[-ml:]] and hg == [x["g"] for x in prev[-ml:]]
            assert hc == [x["i"] for x in prev if x["c"]][-ml:]  # only the events where `c` holds
    with pytest.raises(ValueError, match="max_len"):
        user_histories(df, "u", "t", {"hi": "i"}, 0)
