"""`bars predict`: a real recorded run scores raw files; its own test split from the raw file gives the recorded
test metrics exactly; the prediction is a child run of the source run; bad input stops with file:line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from _movielens import movielens_raw_splits
from mlflow.tracking import MlflowClient

from bars import metrics
from bars.config import PROJECT_ROOT, compose
from bars.data.errors import DataError
from bars.predict import OUTPUT_COLUMN, PredictError, parse_options, predict_file
from bars.recorded import RecordedRunError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def raw_test(trained_run, tmp_path_factory):
    """The run's test split as a raw file (the ratings.csv columns, shuffled order, an id column to keep)."""
    rows = movielens_raw_splits()["test"].with_row_index("row_id")
    path = tmp_path_factory.mktemp("raw") / "test_ratings.csv"
    rows.select("row_id", "rating", "timestamp", "userId", "movieId").write_csv(path)
    return {"path": path, "rows": rows}


def _quiet(*_):
    return None


def test_the_runs_own_test_split_from_its_raw_file_gives_the_recorded_test_metrics_exactly(trained_run, raw_test):
    cfg = compose(trained_run["overrides"])
    r = predict_file(trained_run["run_id"], raw_test["path"], cfg, keep=["row_id", "userId", "rating"],
                     progress=False, say=_quiet)
    source = MlflowClient(tracking_uri=trained_run["uri"]).get_run(trained_run["run_id"])
    recorded = source.data.metrics
    assert r.rows == raw_test["rows"].height == int(source.data.tags["rows_test"])
    for name in ("auc", "logloss", "gauc"):
        assert r.metrics[f"predict_{name}"] == recorded[f"test_{name}"], name  # exactly, not approximately
    # the file: kept columns in input order, then the probability; its AUC is the run's test AUC too
    out = pl.read_parquet(r.out)
    assert out.columns == ["row_id", "userId", "rating", OUTPUT_COLUMN]
    assert out["row_id"].to_list() == [str(i) for i in raw_test["rows"]["row_id"]]  # CSV extras: text, lossless
    assert out.schema[OUTPUT_COLUMN] == pl.Float32 and out[OUTPUT_COLUMN].is_between(0, 1).all()
    y = (out["rating"] >= 4.0).cast(pl.Float32).to_numpy()
    assert metrics.auc(y, out[OUTPUT_COLUMN].to_numpy()) == recorded["test_auc"]
    assert r.out == trained_run["root"] / "predictions" / f"test_ratings__{trained_run['run_id']}.parquet"
    # recorded: a child run of the source run
    child = MlflowClient(tracking_uri=trained_run["uri"]).get_run(r.predict_run_id)
    t = child.data.tags
    assert child.info.status == "FINISHED" and t["mlflow.parentRunId"] == trained_run["run_id"]
    assert t["stage"] == "predict" and t["source_run"] == trained_run["run_id"] and t["output"] == str(r.out)
    assert t["input_sha256"] == r.input_sha256 and len(r.output_sha256) == 64
    assert child.data.metrics["rows"] == r.rows and child.data.metrics["predict_auc"] == recorded["test_auc"]
    assert child.data.params["predict.keep"] == "row_id,userId,rating"


def test_batch_size_does_not_change_the_rows_scores_beyond_float_noise(trained_run, raw_test, tmp_path):
    cfg = compose(trained_run["overrides"])
    a = predict_file(trained_run["run_id"], raw_test["path"], cfg, out=tmp_path / "a.csv", progress=False,
                     track=False, say=_quiet)
    b = predict_file(trained_run["run_id"], raw_test["path"], cfg, out=tmp_path / "b.parquet", batch_size=1000,
                     progress=False, track=False, say=_quiet)
    pa_, pb = pl.read_csv(a.out)[OUTPUT_COLUMN].to_numpy(), pl.read_parquet(b.out)[OUTPUT_COLUMN].to_numpy()
    assert pl.read_csv(a.out).columns == [OUTPUT_COLUMN] and len(pa_) == len(pb) == a.rows
    assert np.abs(pa_ - pb).max() < 1e-6
    assert a.predict_run_id is None


def test_new_rows_without_label_and_unseen_values(trained_run, tmp_path):
    p = tmp_path / "new.tsv"
    p.write_text("movieId\tuserId\ttimestamp\tid\n1\t1\t964982703\ta\n1\t999999\t964982703\tb\n"
                 "99999999\t1\t964982703\tc\n")
    r = predict_file(trained_run["run_id"], p, compose(trained_run["overrides"]), keep=["id"], progress=False,
                     say=_quiet)
    out = pl.read_parquet(r.out)
    assert out["id"].to_list() == ["a", "b", "c"] and r.metrics == {} and r.rows == 3
    assert out[OUTPUT_COLUMN].is_finite().all()


def test_bad_input_stops_with_file_line_and_leaves_no_output(trained_run, tmp_path):
    cfg = compose(trained_run["overrides"])
    p = tmp_path / "bad.csv"
    p.write_text("userId,movieId,timestamp\n1,1,964982703\n1,one,964982703\n")
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError, match=r"bad.csv:3: column 'movieId': expected an integer or empty, got 'one'"):
        predict_file(trained_run["run_id"], p, cfg, out=out, progress=False, say=_quiet)
    assert not out.exists() and list(tmp_path.iterdir()) == [p]
    p.write_text("userId,timestamp\n1,964982703\n")
    with pytest.raises(DataError, match=r"header lacks columns \['movieId'\]"):
        predict_file(trained_run["run_id"], p, cfg, out=out, progress=False, say=_quiet)
    with pytest.raises(PredictError, match=r"expected a path ending .parquet or .csv"):
        predict_file(trained_run["run_id"], p, cfg, out=tmp_path / "o.json", progress=False, say=_quiet)
    with pytest.raises(RecordedRunError, match="no MLflow run 'nope'"):
        predict_file("nope", p, cfg, progress=False, say=_quiet)
    failed = [r for r in MlflowClient(tracking_uri=trained_run["uri"]).search_runs(
        ["1"], "tags.stage = 'predict' and attributes.status = 'FAILED'")]
    assert failed and "movieId" in failed[0].data.tags["error"]


def test_a_missing_checkpoint_is_a_clear_error(trained_run, tmp_path):
    cfg = compose([*trained_run["overrides"], f"paths.checkpoints={tmp_path}"])
    p = tmp_path / "x.csv"
    p.write_text("userId,movieId,timestamp\n1,1,964982703\n")
    ckpt = trained_run["root"] / "ckpt" / trained_run["run_id"] / "best.pt"
    original = ckpt.read_bytes()
    try:
        ckpt.unlink()
        with pytest.raises(RecordedRunError, match="best checkpoint not found"):
            predict_file(trained_run["run_id"], p, cfg, progress=False, say=_quiet)
        ckpt.write_bytes(original[:-8] + b"\0" * 8)  # other weights than the run recorded
        with pytest.raises(RecordedRunError, match="sha256 differs from the run's checkpoint_sha256"):
            predict_file(trained_run["run_id"], p, compose(trained_run["overrides"]), progress=False, say=_quiet)
    finally:
        ckpt.write_bytes(original)


def test_options_and_cli(trained_run, raw_test, tmp_path):
    assert parse_options(["run_id=a", "file=b", "keep=x,y", "paths.data=/d"], ("run_id", "file", "keep"), "predict") \
        == ({"run_id": "a", "file": "b", "keep": "x,y"}, ["paths.data=/d"])
    with pytest.raises(PredictError, match="unknown argument 'model=dcn'"):
        parse_options(["model=dcn"], ("run_id",), "predict")
    out = tmp_path / "cli.csv"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-m", "bars.cli", "predict", f"run_id={trained_run['run_id']}",
                           f"file={raw_test['path']}", f"out={out}", "keep=row_id", "progress=false",
                           *trained_run["overrides"]], check=False, capture_output=True, text=True,
                           cwd=PROJECT_ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "predict_auc" in proc.stdout and pl.read_csv(out).columns == ["row_id", OUTPUT_COLUMN]
    bad = subprocess.run([sys.executable, "-m", "bars.cli", "predict", f"run_id={trained_run['run_id']}",
                          f"file={tmp_path / 'none.csv'}", *trained_run["overrides"]], check=False,
                         capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    assert bad.returncode == 1 and "bars predict: error: file=" in bad.stderr and "not found" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "bars.cli", "predict"], check=False, capture_output=True,
                           text=True, env=env)
    assert usage.returncode == 2 and "make predict RUN=<id> FILE=<path>" in usage.stderr
