"""synthetic_funnel, the multi-task demo: deterministic, conversion only on clicks, histories are the user's
earlier clicks (no leakage), and the loader delivers both labels ([N, 2] with their names) while ``label`` stays
click for single-task training."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from bars.config import compose
from bars.data.funnel import generate_funnel
from bars.data.loader import load_dataset
from bars.data.prepare import dataset_fingerprint, load_recipe, prepare


def test_generator_is_seeded_and_a_funnel(tmp_path):
    a = pl.read_parquet(generate_funnel(tmp_path / "a.parquet", users=150, seed=3))
    b = pl.read_parquet(generate_funnel(tmp_path / "b.parquet", users=150, seed=3))
    c = pl.read_parquet(generate_funnel(tmp_path / "c.parquet", users=150, seed=4))
    assert a.equals(b) and not a.equals(c)
    assert (a["conversion"] <= a["click"]).all()  # a conversion needs a click
    assert 0.05 < a["click"].mean() < 0.5 and 0 < a["conversion"].mean() < a["click"].mean()
    assert not list(tmp_path.glob("*.tmp*"))
    # a row's history = the same user's clicked items at strictly earlier times, oldest first
    rows = a.with_row_index("r")
    clicks = rows.filter(pl.col("click") == 1).select("user", pl.col("time").alias("t2"), pl.col("item").alias("i2"))
    expect = (rows.join(clicks, on="user").filter(pl.col("t2") < pl.col("time")).sort(["r", "t2"])
              .group_by("r", maintain_order=True).agg(pl.col("i2")))
    got = rows.join(expect, on="r", how="left").with_columns(pl.col("i2").fill_null([]))
    assert (got["hist_items"] == got["i2"]).all()
    assert (a["hist_items"].list.len() == a["hist_categories"].list.len()).all()
    with pytest.raises(ValueError, match="users"):
        generate_funnel(tmp_path / "x.parquet", users=0)


def test_prepared_funnel_has_two_labels_and_shared_histories(tmp_path):
    over = [f"paths.data={tmp_path / 'data'}", f"data.raw_dir={tmp_path / 'raw'}", "data.users=300",
            "data.impressions_per_user=40", "data.history_max_len=8"]
    out = prepare(compose(["data=synthetic_funnel", *over]), quiet=True)
    ds = load_dataset(out)
    spec = ds.spec
    assert spec.label == "click" and spec.labels == ("click", "conversion")
    assert spec["hist_items"].share_embedding == "item" and spec["hist_categories"].share_embedding == "category"
    tr = ds.splits["train"]
    assert tr.labels.shape == (len(tr), 2) and tr.label_names == ("click", "conversion")
    assert torch.equal(tr.labels[:, 0], tr.label)
    assert bool((tr.labels[:, 1] <= tr.labels[:, 0]).all())
    hist = tr.features["hist_items"]
    assert hist.shape[1] == 8 and bool(((hist > 0).int().diff(dim=1) >= 0).all())  # pre-padded
    flat = prepare(compose(["data=synthetic_funnel", *over, "data.history=false"]), quiet=True)
    assert flat.name != out.name
    assert set(load_dataset(flat).spec.names) == set(spec.names) - {"hist_items", "hist_categories"}


def test_every_generator_argument_names_the_raw_file_and_the_prepared_dataset(tmp_path):
    """The raw file's name and the prepared folder's fingerprint change with each generator argument (an old raw
    file of another size is never reused); an invalid one is an error naming its key, an unknown key too."""
    from hydra.errors import ConfigCompositionException

    from bars.data.errors import DataError

    cfg = compose(["data=synthetic_funnel", f"paths.data={tmp_path / 'data'}", f"data.raw_dir={tmp_path / 'raw'}",
                   "data.history_max_len=4", "data.users=40", "data.impressions_per_user=10", "data.items=50",
                   "data.categories=5", "data.generator_seed=0"])

    def run(**change):  # the recipe (it generates the raw file) and the prepared folder's name, its fingerprint
        c = cfg.copy()
        for k, v in change.items():
            c.data[k] = v
        return dataset_fingerprint(load_recipe(c))

    first = run()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["funnel_40u_10i_50items_5cats_0.parquet"]
    assert prepare(cfg, quiet=True).name == first
    changed = {"users": 41, "impressions_per_user": 11, "items": 51, "categories": 6, "generator_seed": 1}
    folders = {first} | {run(**{key: value}) for key, value in changed.items()}
    assert len(folders) == 1 + len(changed)  # five new fingerprints
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted([
        "funnel_40u_10i_50items_5cats_0.parquet", "funnel_41u_10i_50items_5cats_0.parquet",
        "funnel_40u_11i_50items_5cats_0.parquet", "funnel_40u_10i_51items_5cats_0.parquet",
        "funnel_40u_10i_50items_6cats_0.parquet", "funnel_40u_10i_50items_5cats_1.parquet"])
    items = pl.read_parquet(tmp_path / "raw" / "funnel_40u_10i_50items_5cats_0.parquet")
    assert items["item"].max() < 50 and items["category"].max() < 5 and items["user"].n_unique() == 40
    for key, bad in (("items", 0), ("users", "abc"), ("categories", 1.5), ("generator_seed", -1),
                     ("impressions_per_user", True)):
        with pytest.raises(DataError, match=rf"data\.{key} must be an integer"):
            run(**{key: bad})
    with pytest.raises(ConfigCompositionException, match="data.item_count"):
        compose(["data=synthetic_funnel", "data.item_count=5"])


def test_shipped_funnel_is_the_dense_one_the_esmm_bench_reads():
    """The shipped size (conf/data/synthetic_funnel.yaml: data.users, impressions_per_user, items, categories,
    generator_seed) is the one `make bench-esmm` measures: its defaults read that config (one source)."""
    from bars.benchmarks.esmm import shipped_size

    assert shipped_size() == {"users": 1000, "impressions": 200, "items": 500, "categories": 30, "seed": 0}
