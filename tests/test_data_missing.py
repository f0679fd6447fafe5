"""Missing categorical values (issue 9): ``data.missing: oov`` (FuxiCTR: the learned OOV row 1, shared with unseen
and rare values) or ``padding`` (the zero row 0). Checked on the real Kaggle Criteo head (string fields, interned
while staging) and on tabular files with integer and string categorical columns (the other two encoders)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.prepare import dataset_fingerprint, load_recipe, prepare
from bars.data.spec import OOV_INDEX, PAD_INDEX


def _categorical(ds, split="train"):
    return {f.name: ds.splits[split].features[f.name].numpy() for f in ds.spec.features if f.type == "categorical"}


def test_criteo_missing_values_get_the_oov_row(data_cfg, criteo_raw):
    raw = pl.read_csv(criteo_raw / "train.txt.gz", separator="\t", has_header=False)
    assert raw.select(pl.col(f"column_{i}").is_null().sum() for i in range(14, 40)).sum_horizontal().item() > 0
    oov = load_dataset(prepare(data_cfg("data=criteo_x4_001", f"data.raw_dir={criteo_raw}"), quiet=True))
    pad = load_dataset(prepare(data_cfg("data=criteo_x4_001", f"data.raw_dir={criteo_raw}", "data.missing=padding"),
                               quiet=True))
    assert oov.manifest["missing"] == "oov" and pad.manifest["missing"] == "padding"
    assert oov.fingerprint != pad.fingerprint
    assert [f.vocab_size for f in oov.spec.features] == [f.vocab_size for f in pad.spec.features]
    moved = 0
    for split in ("train", "valid", "test"):
        a, b = _categorical(oov, split), _categorical(pad, split)
        for name in a:
            assert not (a[name] == PAD_INDEX).any(), name  # no categorical value lands on the padding row
            was_missing = b[name] == PAD_INDEX
            assert (a[name][was_missing] == OOV_INDEX).all()
            assert np.array_equal(a[name][~was_missing], b[name][~was_missing])  # everything else unchanged
            moved += int(was_missing.sum())
    assert moved > 1000  # C fields of the Criteo head are often empty


def test_tabular_integer_and_string_columns(data_cfg, tmp_path):
    f = tmp_path / "all.parquet"
    n = 400
    pl.DataFrame({"y": [i % 2 for i in range(n)],
                  "i": [None if i % 9 == 0 else i % 5 for i in range(n)],
                  "s": [None if i % 7 == 0 else f"v{i % 4}" for i in range(n)]}).write_parquet(f)
    base = ["data=tabular", f"data.file={f}", "data.label=y", "data.categorical=[i,s]"]
    for rule, want in (("oov", OOV_INDEX), ("padding", PAD_INDEX)):
        ds = load_dataset(prepare(data_cfg(*base, f"data.missing={rule}"), quiet=True))
        got = _categorical(ds)
        for col, every in (("i", 9), ("s", 7)):
            values = got[col]
            assert (values == want).sum() >= 1, (rule, col)
            if rule == "oov":
                assert not (values == PAD_INDEX).any()
            else:
                assert not (values == OOV_INDEX).any()  # every present value is known (min_count 1)


def test_missing_rule_is_required_and_checked(data_cfg):
    with pytest.raises(DataError, match=r"data.missing: expected one of \['oov', 'padding'\], got 'zero'"):
        load_recipe(data_cfg("data=movielens_small", "data.missing=zero"))
    with pytest.raises(DataError, match="data.missing is required"):
        load_recipe(data_cfg("data=movielens_small", "~data.missing"))


def test_padding_rule_keeps_the_fingerprint_it_had_before_the_rule(data_cfg):
    """Data built before the rule existed (no data.missing, padding semantics) keeps its fingerprint under
    ``padding``; ``oov`` is new bytes, so a new fingerprint."""
    pad = dataset_fingerprint(load_recipe(data_cfg("data=movielens_small", "~data.groups", "data.missing=padding")))
    oov = dataset_fingerprint(load_recipe(data_cfg("data=movielens_small", "~data.groups")))
    assert pad == "2753b6e75517" and oov != pad
