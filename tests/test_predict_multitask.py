"""`bars predict` with a multi-task run (ESMM on the funnel demo): one probability column per task; the run's own
test split from the raw file gives every task's recorded test metrics exactly; label columns are optional, each
task scored where the file holds its label; an input column named like an output column is refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from bars import metrics
from bars.config import compose
from bars.data import transforms as T
from bars.predict import PredictError, output_columns, predict_file

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _quiet(*_):
    return None


@pytest.fixture(scope="module")
def esmm_run(tmp_path_factory) -> dict:
    from bars.run import train_one

    root = tmp_path_factory.mktemp("esmm")
    overrides = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"paths.data={root / 'data'}",
                 f"paths.checkpoints={root / 'ckpt'}", f"paths.predictions={root / 'predictions'}",
                 f"paths.exports={root / 'exports'}"]
    cfg = compose(["model=esmm", "data=synthetic_funnel", "train.max_epochs=1", "train.num_threads=1",
                   "train.device=cpu", f"data.raw_dir={root / 'raw'}", "data.users=300",
                   "data.impressions_per_user=40", "data.history_max_len=8",
                   *overrides])
    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})
    raw = next((root / "raw").glob("funnel_*.parquet"))
    rows = pl.read_parquet(raw)
    ids = T.assign_split(0, rows.height, int(cfg.data.split_seed), tuple(cfg.data.split_ratios))
    test = rows.filter(pl.Series(ids == 2)).with_row_index("row_id")
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "run_id": r.run_id, "overrides": overrides,
            "test": test}


def _write(df: pl.DataFrame, path: Path) -> Path:
    df.write_parquet(path)
    return path


def test_multitask_run_predicts_every_task_and_its_test_split_gives_the_recorded_metrics_exactly(esmm_run, tmp_path):
    cfg = compose(esmm_run["overrides"])
    test = esmm_run["test"]
    path = _write(test, tmp_path / "funnel_test.parquet")
    r = predict_file(esmm_run["run_id"], path, cfg, keep=["row_id", "user"], progress=False, say=_quiet)
    recorded = MlflowClient(tracking_uri=esmm_run["uri"]).get_run(esmm_run["run_id"]).data.metrics
    assert r.rows == test.height
    for task in ("click", "conversion"):
        for name in ("auc", "logloss", "gauc"):
            key = metrics.task_key(name, task)
            assert r.metrics[f"predict_{key}"] == recorded[f"test_{key}"], key  # exactly, not approximately
    out = pl.read_parquet(r.out)
    assert output_columns(("click", "conversion")) == ["probability_click", "probability_conversion"]
    assert out.columns == ["row_id", "user", "probability_click", "probability_conversion"]
    assert out["row_id"].to_list() == test["row_id"].to_list()
    for task in ("click", "conversion"):
        p = out[f"probability_{task}"]
        assert p.dtype == pl.Float32 and p.is_between(0, 1).all()
        assert metrics.auc(test[task].to_numpy().astype(np.float32), p.to_numpy()) == \
            recorded[f"test_{metrics.task_key('auc', task)}"]
    # ESMM: pCTCVR = pCTR x pCVR <= pCTR on every row
    assert (out["probability_conversion"] <= out["probability_click"] + 1e-6).all()
    child = MlflowClient(tracking_uri=esmm_run["uri"]).get_run(r.predict_run_id)
    assert child.data.tags["mlflow.parentRunId"] == esmm_run["run_id"]
    assert child.data.metrics["predict_auc_conversion"] == recorded["test_auc_conversion"]


def test_multitask_labels_are_optional_each_task_scored_where_present(esmm_run, tmp_path):
    cfg = compose(esmm_run["overrides"])
    test = esmm_run["test"]
    full = pl.read_parquet(predict_file(esmm_run["run_id"], _write(test, tmp_path / "a.parquet"), cfg,
                                        out=tmp_path / "a_out.parquet", progress=False, track=False,
                                        say=_quiet).out)
    # no label at all: scores only, the same scores
    r = predict_file(esmm_run["run_id"], _write(test.drop("click", "conversion"), tmp_path / "b.parquet"), cfg,
                     out=tmp_path / "b_out.csv", progress=False, track=False, say=_quiet)
    assert r.metrics == {}
    b = pl.read_csv(r.out)
    assert b.columns == ["probability_click", "probability_conversion"]
    assert np.allclose(b["probability_click"].to_numpy(), full["probability_click"].to_numpy(), atol=1e-6)
    # only the click label: the click task's metrics, none for conversion
    r = predict_file(esmm_run["run_id"], _write(test.drop("conversion"), tmp_path / "c.parquet"), cfg,
                     out=tmp_path / "c_out.parquet", progress=False, track=False, say=_quiet)
    assert set(r.metrics) == {f"predict_{metrics.task_key(n, 'click')}" for n in ("auc", "logloss", "gauc")}
    # a label present on some rows only: that task is not scored
    partial = test.with_columns(pl.when(pl.col("row_id") == 0).then(None).otherwise(pl.col("conversion"))
                                .alias("conversion"))
    r = predict_file(esmm_run["run_id"], _write(partial, tmp_path / "d.parquet"), cfg,
                     out=tmp_path / "d_out.parquet", progress=False, track=False, say=_quiet)
    assert not any(k.endswith("_conversion") for k in r.metrics) and "predict_auc_click" in r.metrics


def test_multitask_kept_column_named_like_an_output_is_refused(esmm_run, tmp_path):
    cfg = compose(esmm_run["overrides"])
    clash = esmm_run["test"].with_columns(pl.col("user").alias("probability_click"))
    out = tmp_path / "out.parquet"
    with pytest.raises(PredictError, match="'probability_click': output column"):
        predict_file(esmm_run["run_id"], _write(clash, tmp_path / "e.parquet"), cfg, out=out,
                     keep=["probability_click"], progress=False, track=False, say=_quiet)
    assert not out.exists()
