"""The streaming loader (bars.data.stream, issue 14) on real Parquet splits: movielens_small prepared by the
engine, rewritten with small row groups (the engine writes 262,144 rows per group, more than this split has)
so that row-group shuffling, windows and carried rows are all exercised."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bars.config import compose
from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.stream import LoaderConfig, StreamSplit, plan_modes, row_bytes
from bars.fileio import file_digest


def regroup(src: Path, dst: Path, group_rows: int) -> Path:
    """A copy of a prepared folder whose splits have ``group_rows`` rows per row group (same rows, same order)."""
    dst.mkdir(parents=True)
    manifest = json.loads((src / "manifest.json").read_text())
    for entry in manifest["splits"].values():
        pq.write_table(pq.read_table(src / entry["file"]), dst / entry["file"], row_group_size=group_rows,
                       compression="lz4")
        entry.update(bytes=(dst / entry["file"]).stat().st_size, sha256=file_digest(dst / entry["file"], "sha256"))
    (dst / "feature_spec.json").write_bytes((src / "feature_spec.json").read_bytes())
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def grouped(movielens_folder, tmp_path_factory) -> Path:
    return regroup(movielens_folder, tmp_path_factory.mktemp("stream") / "ml", 7000)


def rows_matrix(batches) -> np.ndarray:
    """Every row of the batches as one float64 row (features in spec order, sequences flattened, label last)."""
    out = []
    for xb, yb in batches:
        cols = [v.reshape(len(yb), -1).double() for _, v in sorted(xb.items())] + [yb.reshape(-1, 1).double()]
        out.append(torch.cat(cols, 1).numpy())
    return np.concatenate(out)


def sort_rows(m: np.ndarray) -> np.ndarray:
    return m[np.lexsort(m.T[::-1])]


def test_the_real_file_has_many_row_groups(grouped):
    ds = load_dataset(grouped, loader=LoaderConfig(mode="stream"))
    train = ds.splits["train"]
    assert isinstance(train, StreamSplit) and ds.modes == dict.fromkeys(("train", "valid", "test"), "stream")
    assert len(train.group_rows) == 13 and len(train) == sum(train.group_rows) == ds.manifest["splits"]["train"]["rows"]


@pytest.mark.parametrize("batch_size", [4096, 777])
def test_unshuffled_batches_equal_the_in_memory_loader(grouped, batch_size):
    mem = load_dataset(grouped).splits["valid"]
    st = load_dataset(grouped, loader=LoaderConfig(mode="stream")).splits["valid"]
    a = list(mem.batches(batch_size, shuffle=False))
    b = list(st.batches(batch_size, shuffle=False))
    assert len(a) == len(b) == -(-len(mem) // batch_size)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and xa.keys() == xb.keys()
        assert all(torch.equal(xa[k], xb[k]) and xa[k].dtype == xb[k].dtype for k in xa)
    assert torch.equal(st.label, mem.label)
    assert torch.equal(st.features["user"], mem.features["user"])  # one column read on demand (gAUC's group)


def test_shuffled_epochs_are_seeded_and_cover_every_row_once(grouped):
    mem = load_dataset(grouped).splits["train"]
    cfg = LoaderConfig(mode="stream", buffer_rows=20_000, prefetch=3)
    st = load_dataset(grouped, loader=cfg).splits["train"]
    first = list(st.batches(4096, shuffle=True, seed=11))
    again = list(StreamSplit(st.path, st.spec, buffer_rows=20_000, prefetch=1).batches(4096, shuffle=True, seed=11))
    other = list(st.batches(4096, shuffle=True, seed=12))
    sizes = [len(y) for _, y in first]
    assert all(s == 4096 for s in sizes[:-1]) and sum(sizes) == len(mem) and sizes[-1] == len(mem) % 4096
    assert rows_matrix(first).tobytes() == rows_matrix(again).tobytes()  # same seed: the same batches
    assert rows_matrix(first).tobytes() != rows_matrix(other).tobytes()
    everything = sort_rows(rows_matrix(mem.batches(100_000, shuffle=False)))
    for epoch in (first, other):
        assert np.array_equal(sort_rows(rows_matrix(epoch)), everything)  # each row exactly once per epoch
    # shuffled: the first batch draws from many row groups, not from the file's first rows
    head = rows_matrix([next(mem.batches(4096, shuffle=False))])
    assert not np.array_equal(rows_matrix(first[:1]), head)


def test_stopping_early_stops_the_reader_thread(grouped):
    st = load_dataset(grouped, loader=LoaderConfig(mode="stream", prefetch=2)).splits["train"]
    before = {t.name for t in threading.enumerate()}
    it = st.batches(512, shuffle=True, seed=0)
    next(it)
    assert any(t.name.startswith("stream:") for t in threading.enumerate())
    it.close()  # what a pruned trial's `break` does
    deadline = time.monotonic() + 10
    while any(t.name.startswith("stream:") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {t.name for t in threading.enumerate()} <= before


def test_a_file_that_breaks_while_streaming_is_a_clear_error(grouped, tmp_path):
    folder = regroup(grouped, tmp_path / "bad", 7000)
    st = load_dataset(folder, loader=LoaderConfig(mode="stream")).splits["train"]
    st.path.write_bytes(st.path.read_bytes()[:1000])  # truncated after the metadata was read
    with pytest.raises(DataError, match=r"train.parquet: streaming failed"):
        list(st.batches(4096, shuffle=True, seed=0))


def test_evaluation_is_identical_and_training_is_reproducible(grouped):
    from bars.models import build
    from bars.train import TrainConfig, evaluate, fit

    stream = LoaderConfig(mode="stream", buffer_rows=20_000)
    mem, st = load_dataset(grouped), load_dataset(grouped, loader=stream)
    params = {"embedding_dim": 8, "hidden_units": [32], "dropout": 0.0, "batch_norm": False}
    cfg = TrainConfig(max_epochs=2, batch_size=2048, device="cpu", num_threads=1)
    results = []
    for _ in range(2):
        model = build("dnn", st.spec, params)
        r = fit(model, st.splits["train"], st.splits["valid"], cfg, seed=5, group_column="user")
        results.append((r.best_val, [h.train_loss for h in r.history],
                        evaluate(model, st.splits["test"], group_column="user")))
        assert evaluate(model, mem.splits["test"], group_column="user") == results[-1][2]
    assert results[0] == results[1]  # the same seed: the same batches, the same numbers
    assert set(results[0][0]) == {"auc", "logloss", "gauc"} and results[0][0]["auc"] > 0.7


def test_auto_mode_streams_what_does_not_fit(movielens_folder):
    ds = load_dataset(movielens_folder)
    rows = {k: len(v) for k, v in ds.splits.items()}
    width = row_bytes(ds.spec)
    assert width == 4 * (len(ds.spec.features) - 1 + ds.spec["genres"].max_len) + 4
    auto = LoaderConfig()
    assert plan_modes(ds.spec, rows, auto, available=1 << 40) == dict.fromkeys(rows, "memory")
    # room for valid and test but not for train (loading needs twice the tensors' size, half the memory is used)
    room = 4 * (rows["valid"] + rows["test"]) * width + 1
    assert plan_modes(ds.spec, rows, auto, available=room) == {"train": "stream", "valid": "memory", "test": "memory"}
    assert plan_modes(ds.spec, rows, auto, available=0) == dict.fromkeys(rows, "stream")
    assert plan_modes(ds.spec, rows, LoaderConfig(mode="memory"), available=0) == dict.fromkeys(rows, "memory")
    assert set(load_dataset(movielens_folder, loader=auto).modes.values()) == {"memory"}  # this machine: fits


def test_loader_config_is_strict():
    assert LoaderConfig.from_cfg(None) == LoaderConfig()
    assert LoaderConfig.from_cfg(compose([]).loader) == LoaderConfig()  # conf/config.yaml == the defaults
    with pytest.raises(DataError, match=r"loader: unknown keys \['buffer'\]; known keys are"):
        LoaderConfig.from_cfg({"buffer": 3})
    with pytest.raises(DataError, match=r"loader.mode must be one of \['auto', 'memory', 'stream'\], got 'disk'"):
        LoaderConfig(mode="disk")
    with pytest.raises(DataError, match="loader.memory_fraction must be in"):
        LoaderConfig(memory_fraction=0)


def test_a_streamed_run_is_recorded_and_repeats_exactly(tmp_path, movielens_folder):
    """`bars train ... loader.mode=stream` end to end (real data, real MLflow): tags say which loader trained each
    split; a second run with the same seed gives the same metrics; `bars reproduce` trains the way the run did."""
    from mlflow.tracking import MlflowClient

    from bars.reproduce import reproduce
    from bars.run import train_one

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    paths = [f"paths.data={movielens_folder.parent.parent}", f"paths.checkpoints={tmp_path / 'ck'}",
             f"tracking.uri={uri}"]
    ov = ["data=movielens_small", "model=dnn", "model.params.hidden_units=[32]", "train.max_epochs=1",
          "train.num_threads=1", "loader.mode=stream", "loader.buffer_rows=30000", *paths]
    a = train_one(compose(ov), quiet=True)
    tags = MlflowClient(tracking_uri=uri).get_run(a.run_id).data.tags
    assert (tags["loader_train"], tags["loader_valid"], tags["loader_test"]) == ("stream",) * 3
    c = reproduce(a.run_id, compose(paths), out=lambda _: None)  # a second run of the recorded config
    assert c.identical and {k: b for k, _, b, _ in c.rows}["test_auc"] == a.metrics["test_auc"]
