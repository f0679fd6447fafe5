"""The behaviour-sequence and multi-label data path: shared tables, padding side, malformed sequences, meta
columns, several labels, pretrained tables (files -> spec -> FeatureEmbedding), valid = test."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bars.config import compose
from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.prepare import prepare
from bars.data.spec import FeatureSpec
from bars.models.layers import FeatureEmbedding, LogisticRegression, init_bars_

HEADER = "click,buy,user,item,cate,item_hist,cate_hist\n"


def _rows(lines):
    return HEADER + "".join(line + "\n" for line in lines)


TRAIN = [  # item_hist shares item's table, cate_hist shares cate's; histories oldest first
    "1,1,u1,10,c1,11^12^13,c1^c2^c1",
    "0,0,u1,11,c2,10^12,c2^c2",
    "1,0,u2,12,c1,99,c9",
    "0,0,u2,10,c1,,",
    "1,1,u3,13,c2,10^11^12^13^14,c1^c1^c2^c2^c1",
    "0,0,u3,14,c2,10,c1",
]
VALID = ["1,0,u1,12,c1,10^11,c1^c2", "0,0,u2,77,c3,12^77,c1^c3"]
TEST = ["1,1,u3,10,c1,13^14,c2^c1", "0,0,u1,14,c2,10,c1"]


def _files(tmp_path: Path, train=TRAIN, valid=VALID, test=TEST) -> dict[str, Path]:
    out = {}
    for k, rows in (("train", train), ("valid", valid), ("test", test)):
        out[k] = tmp_path / f"{k}.csv"
        out[k].write_text(_rows(rows))
    return out


def hydra_value(v) -> str:
    """A Python value in Hydra's override grammar (dict keys bare, strings quoted)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("'", "\\'") + "'"


def _cfg(tmp_path: Path, files: dict[str, Path], options: dict | None = None, extra=()):
    opts = options if options is not None else {
        "item_hist": {"share_embedding": "item", "padding": "pre", "max_len": 3, "sep": "^", "token_type": "int"},
        "cate_hist": {"share_embedding": "cate", "padding": "pre", "max_len": 3, "sep": "^",
                      "align_with": "item_hist"},
    }
    ov = [
        "data=tabular", f"paths.data={tmp_path / 'data'}",
        *[f"data.files.{k}={v}" for k, v in files.items()],
        "data.labels=[click,buy]", "data.categorical=[item,cate]", "data.sequence=[item_hist,cate_hist]",
        "data.meta=[user]", f"++data.field_options={hydra_value(opts)}", "data.group_column=user", *extra,
    ]
    return compose(ov)


def test_shared_tables_padding_meta_and_labels(tmp_path):
    folder = prepare(_cfg(tmp_path, _files(tmp_path)), quiet=True)
    ds = load_dataset(folder)
    spec = ds.spec
    # one vocabulary per shared table: the owner and its sequence have the same size and the same indices
    assert spec["item_hist"].share_embedding == "item" and spec["item_hist"].vocab_size == spec["item"].vocab_size
    assert spec["item_hist"].padding == "pre" and spec["item_hist"].max_len == 3
    assert spec.labels == ("click", "buy") and spec.label == "click" and spec.meta == ("user",)
    tr = ds.splits["train"]
    item, hist = tr.features["item"].tolist(), tr.features["item_hist"].tolist()
    # value 10 is item of row 3 and the first history token of row 5: the same index
    assert hist[5] == [0, 0, item[3]]  # pre-padded: zeros first
    # truncation on the padding side keeps the LAST max_len behaviours (the most recent): 12^13^14 of row 4
    assert hist[4] == [item[2], item[4], item[5]]
    # 99 occurs only in a history: it joins the shared vocabulary (FuxiCTR merges the sequence's vocabulary)
    assert hist[2][2] >= 2 and hist[2][2] not in item
    assert hist[3] == [0, 0, 0]  # an empty history is all padding
    # unseen in train -> OOV (1); the mask of a sequence is index > 0 whatever the padding side
    va = ds.splits["valid"]
    assert va.features["item"].tolist()[1] == 1 and va.features["item_hist"].tolist()[1] == [0, hist[0][1], 1]
    # several labels: [N, T] in spec order, the first is the single-task label
    assert tr.labels.shape == (6, 2) and tr.labels[:, 1].tolist() == [1, 0, 0, 0, 1, 0]
    assert torch.equal(tr.labels[:, 0], tr.label) and tr.label_names == ("click", "buy")
    _, y = next(tr.batches(4, shuffle=False, all_labels=True))
    assert y.shape == (4, 2)
    # meta: int64 ids, not a feature; grouped metrics read it by name
    assert "user" not in tr.features and tr.meta["user"].dtype == torch.int64
    assert tr.column("user").tolist()[0] == tr.column("user").tolist()[1] != tr.column("user").tolist()[2]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["splits"]["train"]["positives_by_label"] == {"click": 3, "buy": 2}


def test_post_padding_keeps_the_first_behaviours(tmp_path):
    opts = {"item_hist": {"share_embedding": "item", "max_len": 2, "sep": "^"},
            "cate_hist": {"max_len": 2, "sep": "^"}}
    ds = load_dataset(prepare(_cfg(tmp_path, _files(tmp_path), opts), quiet=True))
    spec = ds.spec
    assert spec["item_hist"].padding == "post" and spec["cate_hist"].share_embedding == ""
    tr = ds.splits["train"]
    item, hist = tr.features["item"].tolist(), tr.features["item_hist"].tolist()
    assert hist[4] == [item[3], item[1]]  # 10^11 of 10^11^12^13^14 (FuxiCTR: truncating = padding = post)
    assert hist[5] == [item[3], 0]
    # a table of its own: cate_hist has its own vocabulary (c9 only there)
    assert spec["cate_hist"].vocab_size != spec["cate"].vocab_size
    # the spec JSON omits the late keys at their defaults (byte-identical specs for datasets without them)
    raw = json.loads((ds.folder / "feature_spec.json").read_text())
    assert "padding" not in raw["features"][0] and raw["features"][2]["share_embedding"] == "item"


def test_min_count_applies_per_field_before_the_union(tmp_path):
    # 12 is seen twice as an item (kept at min_count 2) and 12/13 in histories; 13 twice in histories
    opts = {"item_hist": {"share_embedding": "item", "max_len": 5, "sep": "^", "min_count": 2},
            "cate_hist": {"max_len": 5, "sep": "^"}}
    ds = load_dataset(prepare(_cfg(tmp_path, _files(tmp_path), opts, ["data.min_count=2"]), quiet=True))
    tr = ds.splits["train"]
    item, hist = tr.features["item"].tolist(), tr.features["item_hist"].tolist()
    # items with train count >= 2 as item: 10 (x2), 11? no (1), 14? no; in histories: 10 x3, 11 x3, 12 x4, 13 x2
    # union = {10} u {10, 11, 12, 13}; 14 (item once, history once) stays OOV in both
    assert item[5] == 1 and hist[4][4] == 1
    assert item[1] >= 2 and item[1] == hist[4][1]  # 11 known through the history's vocabulary


@pytest.mark.parametrize("bad,expected", [
    ("1,0,u1,10,c1,11^x^13,c1^c2^c1", "sequence 'item_hist' has token 'x': expected integers separated by '^'"),
    ("1,0,u1,10,c1,11^12,c1", "sequence 'cate_hist' has 1 items but 'item_hist' has 2: expected the same length"),
])
def test_malformed_sequence_names_file_and_line(tmp_path, bad, expected):
    files = _files(tmp_path, train=TRAIN[:3] + [bad] + TRAIN[3:])
    with pytest.raises(DataError) as e:
        prepare(_cfg(tmp_path, files), quiet=True)
    assert f"{files['train']}:5: " in str(e.value) and expected in str(e.value)
    assert not any((tmp_path / "data" / "tabular").glob("*/manifest.json"))  # nothing half-written


def test_every_label_must_be_binary(tmp_path):
    files = _files(tmp_path, valid=VALID + ["1,2,u1,12,c1,10,c1"])
    with pytest.raises(DataError, match=rf"{files['valid']}:4: label 'buy' is '2': expected 0 or 1"):
        prepare(_cfg(tmp_path, files), quiet=True)


def _pretrained_files(tmp_path: Path) -> tuple[Path, np.ndarray]:
    keys = np.array([10, 11, 12, 13, 14, 77, 500], dtype=np.int64)  # 77 appears in valid only, 500 nowhere
    vec = np.arange(len(keys) * 4, dtype=np.float32).reshape(len(keys), 4) / 10 + 1
    path = tmp_path / "item_emb.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("key", data=keys)
        hf.create_dataset("value", data=vec)
    return path, vec


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_table_reaches_the_model(tmp_path, freeze):
    path, vec = _pretrained_files(tmp_path)
    opts = {"item": {"pretrained": str(path), "freeze_pretrained": freeze},
            "item_hist": {"share_embedding": "item", "padding": "pre", "max_len": 3, "sep": "^"},
            "cate_hist": {"max_len": 3, "sep": "^"}}
    ds = load_dataset(prepare(_cfg(tmp_path, _files(tmp_path), opts), quiet=True))
    spec = ds.spec
    f = spec["item"]
    assert f.pretrained == "pretrained_item.parquet" and f.pretrained_dim == 4 and f.freeze_pretrained is freeze
    # the file's keys join the vocabulary: 77 (valid only) gets an index and its vector
    assert ds.splits["valid"].features["item"].tolist()[1] >= 2
    assert len(spec.tables["item"].index) == 7 and f.vocab_size == 2 + 7 + 1  # + 99 from the history
    emb = FeatureEmbedding(spec, 4)
    init_bars_(emb, 1e-4)
    va = ds.splits["valid"]
    got = emb.lookup("item", va.features["item"])
    assert torch.allclose(got[1], torch.from_numpy(vec[5]))  # key 77
    hist = emb.lookup("item_hist", ds.splits["train"].features["item_hist"])  # shares the pretrained table
    assert torch.allclose(hist[0, 2], torch.from_numpy(vec[3]))  # 11^12^13: last = 13
    table = emb.pretrained["item"]
    assert table.requires_grad is (not freeze)
    oov = table[1].detach()
    assert (float(oov.abs().sum()) == 0.0) is freeze  # rows not in the file: zero when frozen, N(0, std) otherwise
    assert "item" not in emb.table_rows  # not in the packed table
    # the LR term (FuxiCTR: use_pretrain=False) gets an ordinary dim-1 table
    lr = LogisticRegression(spec)
    assert lr(next(ds.splits["train"].batches(3, shuffle=False))[0]).shape == (3, 1)
    with pytest.raises(ValueError, match="pretrained vectors have width 4 but the embedding dim is 8"):
        FeatureEmbedding(spec, 8)
    bare = FeatureSpec.load(ds.folder / "feature_spec.json")
    with pytest.raises(ValueError, match="carries no rows: load the dataset"):
        FeatureEmbedding(bare, 4)


def test_bad_pretrained_file_is_named(tmp_path):
    path = tmp_path / "emb.h5"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("key", data=np.array([1, 2, 2]))
        hf.create_dataset("value", data=np.zeros((3, 2), dtype=np.float32))
    opts = {"item": {"pretrained": str(path)}, "item_hist": {"sep": "^"}, "cate_hist": {"sep": "^"}}
    with pytest.raises(DataError, match=rf"{path}: key 2 appears more than once"):
        prepare(_cfg(tmp_path, _files(tmp_path), opts), quiet=True)


def test_sequence_embedding_masks_and_pooling(tmp_path):
    ds = load_dataset(prepare(_cfg(tmp_path, _files(tmp_path)), quiet=True))
    emb = FeatureEmbedding(ds.spec, 3)
    xb = {k: v[:5] for k, v in ds.splits["train"].features.items()}
    seqs, mask = emb.sequence(xb, "item_hist")
    assert seqs.shape == (5, 3, 3) and mask.tolist()[1] == [False, True, True]
    assert torch.equal(seqs[1, 2], emb.lookup("item", xb["item"])[2])  # same table, same row for value 12
    pooled = emb(xb)[:, 2]  # fields: item, cate, item_hist, cate_hist
    assert torch.allclose(pooled[1], seqs[1, 1:].mean(0)) and float(pooled[3].detach().abs().sum()) == 0.0
    summed = FeatureEmbedding(ds.spec, 3, sequence_pooling="sum")
    summed.load_state_dict(emb.state_dict())
    assert torch.allclose(summed(xb)[1, 2], seqs[1, 1:].sum(0))
    unshared = FeatureEmbedding(ds.spec, 3, use_sharing=False)
    assert "item_hist" in unshared.table_rows and "item_hist" not in emb.table_rows


def test_valid_is_test_is_loaded_once(tmp_path):
    from bars.data.engine import Field, Recipe, build
    from bars.data.sources import Source

    files = _files(tmp_path)
    recipe = Recipe(name="t", sources=[Source(files["train"], split="train"), Source(files["test"], split="test")],
                    fields=[Field("item"), Field("cate")], labels=["click", "buy"], valid_is_test=True)
    out = tmp_path / "built"
    out.mkdir()
    m = build(recipe, out, "fp")
    assert m["splits"]["valid"]["same_as"] == "test" and m["splits"]["valid"]["file"] == "test.parquet"
    assert not (out / "valid.parquet").exists()
    ds = load_dataset(out)
    assert ds.splits["valid"] is ds.splits["test"]
