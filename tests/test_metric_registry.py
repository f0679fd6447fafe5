"""Adding a metric is one function plus one registration line: a toy metric registered here reaches the training
record (EpochLog / FitResult via RunResult), MLflow (per epoch and final), a sweep's trials.csv and the
leaderboard CSV and markdown, with no other change. Plus gAUC on a dataset with a group column, and the
registry's own rules. Real runs on a tiny tabular dataset, a real MLflow store, a real Optuna journal."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bars import leaderboard as lb
from bars import metrics
from bars.config import compose
from bars.run import train_one


def accuracy(y_true, y_prob) -> float:
    """The toy metric: share of rows whose thresholded probability equals the label."""
    y = np.asarray(y_true, dtype=float)
    return float(((np.asarray(y_prob) >= 0.5) == (y == 1)).mean())


@pytest.fixture
def toy():
    metrics.register("toy", accuracy, "max", label="toy accuracy")  # the one line a new metric needs
    try:
        yield
    finally:
        metrics.unregister("toy")


def _write_csv(path: Path, n: int = 500) -> Path:
    rng = np.random.default_rng(1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "user", "item"])
        for _ in range(n):
            u, it = int(rng.integers(0, 25)), int(rng.integers(0, 15))
            w.writerow([int((u % 3 == 0) ^ bool(rng.random() < 0.2)), f"u{u}", f"i{it}"])
    return path


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    data = _write_csv(tmp_path / "tiny.csv")
    return ["model=dcn", "data=tabular", f"data.file={data}", "data.categorical=[user,item]",
            "model.params.dnn_hidden_units=[16]", "train.batch_size=128", "train.max_epochs=2",
            "train.num_threads=1", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "tracking.experiment=tabular",
            f"paths.data={tmp_path / 'data'}", f"paths.checkpoints={tmp_path / 'ckpt'}",
            f"sweep.dir={tmp_path / 'sw'}", "sweep.progress=off", *extra]


def test_a_registered_toy_metric_reaches_record_mlflow_sweep_and_leaderboard(toy, tmp_path):
    ov = _overrides(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    results = [train_one(compose([*ov, f"seed={s}"]), extra_tags={"stage": "final"}, quiet=True)
               for s in (2021, 2022)]
    for r in results:
        # the training record
        assert all("toy" in h.val and 0.0 <= h.val["toy"] <= 1.0 for h in r.history)
        best = next(h for h in r.history if h.epoch == r.best_epoch)
        assert r.metrics["val_toy"] == best.val["toy"] and "test_toy" in r.metrics
        # MLflow: per epoch and final
        run = client.get_run(r.run_id)
        assert [m.step for m in client.get_metric_history(r.run_id, "val_toy")][:2] == [1, 2]
        assert run.data.metrics["test_toy"] == pytest.approx(r.metrics["test_toy"])
        # the monitored value of every epoch is logged too (train.monitor: val_auc here)
        logged: dict[int, float] = {}  # the first value per step (the run's final summary comes after)
        for m in sorted(client.get_metric_history(r.run_id, "monitor"), key=lambda m: (m.step, m.timestamp)):
            logged.setdefault(m.step, m.value)
        assert [logged[h.epoch] for h in r.history] == pytest.approx([h.val_auc for h in r.history])

    # a sweep records it per trial (trials.csv)
    from bars.sweep import sweep

    sov = [*ov, "sweep.trials=1", f"sweep.search_dir={_tiny_space(tmp_path)}"]
    sweep(compose(sov), sov)
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert "val_toy" in rows[0] and 0.0 <= float(rows[0]["val_toy"]) <= 1.0

    # the leaderboard has its columns, equal to what MLflow holds
    out = tmp_path / "results"
    lb.generate(f"sqlite:///{tmp_path / 'mlflow.db'}", out, root=tmp_path)
    with open(out / "tabular.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    toys = [client.get_run(r.run_id).data.metrics["test_toy"] for r in results]
    assert float(row["test_toy_mean"]) == pytest.approx(np.mean(toys), abs=1e-12)
    assert float(row["test_toy_std"]) == pytest.approx(np.std(toys, ddof=1), abs=1e-12)
    header = (out / "tabular.md").read_text().splitlines()[4]
    assert "Test toy accuracy (mean ± std)" in header


def _tiny_space(tmp_path: Path) -> Path:
    d = tmp_path / "search"
    d.mkdir(exist_ok=True)
    (d / "dcn.yaml").write_text("train.learning_rate: {type: float, low: 1.0e-3, high: 2.0e-3}\n")
    return d


def test_gauc_rides_on_the_registry_when_the_data_declares_a_group_column(tmp_path):
    ov = _overrides(tmp_path, "+data.group_column=user", "tracking.enabled=false")
    r = train_one(compose(ov), quiet=True)
    assert {"val_gauc", "test_gauc"} <= set(r.metrics) and all("gauc" in h.val for h in r.history)
    plain = train_one(compose(_overrides(tmp_path, "tracking.enabled=false")), quiet=True)
    assert "val_gauc" not in plain.metrics  # no group column: no gAUC
    with pytest.raises(ValueError, match="data.group_column='nope' is not a feature"):
        train_one(compose(_overrides(tmp_path, "+data.group_column=nope", "tracking.enabled=false")), quiet=True)


def test_registry_rules():
    assert [m.name for m in metrics.registered()][:3] == ["auc", "logloss", "gauc"]
    with pytest.raises(metrics.MetricError, match="already registered"):
        metrics.register("auc", accuracy, "max")
    with pytest.raises(metrics.MetricError, match="direction"):
        metrics.register("toy2", accuracy, "up")
    with pytest.raises(metrics.MetricError, match="unknown inputs"):
        metrics.register("toy2", accuracy, "max", inputs=("sessions",))
    with pytest.raises(metrics.MetricError, match="unknown metric 'nope'"):
        metrics.get("nope")
    y, p, g = [0, 1, 1, 0], [0.2, 0.7, 0.4, 0.5], [1, 1, 2, 2]
    assert list(metrics.compute(y, p)) == ["auc", "logloss"]
    assert metrics.compute(y, p, groups=g)["gauc"] == metrics.gauc(y, p, g)


def test_monitor_parsing():
    m = metrics.Monitor.parse("val_logloss")
    assert (m.name, m.direction, m.score({"val_logloss": 0.4})) == ("val_logloss", "min", -0.4)
    w = metrics.Monitor.parse({"val_auc": 1, "val_logloss": -1})
    assert (w.name, w.direction) == ("monitor", "max")
    assert w.value({"val_auc": 0.8, "val_logloss": 0.45}) == pytest.approx(0.35)
    with pytest.raises(metrics.MetricError, match=r"unknown metric key 'val_acc'.*'val_auc', 'val_logloss'"):
        metrics.Monitor.parse("val_acc")
    with pytest.raises(metrics.MetricError, match="unknown metric key 'test_auc'"):
        metrics.Monitor.parse({"test_auc": 1})
    with pytest.raises(metrics.MetricError, match="non-zero number"):
        metrics.Monitor.parse({"val_auc": "high"})
    with pytest.raises(metrics.MetricError, match="the monitor needs"):
        w.value({"val_auc": 0.8})


def test_a_task_less_monitor_reads_the_main_task_of_a_multi_task_evaluation():
    per_task = {"val_auc_click": 0.7, "val_logloss_click": 0.4, "val_auc_conversion": 0.8,
                "val_logloss_conversion": 0.1}
    m = metrics.Monitor.parse("val_auc", task="conversion")
    assert m.value(per_task) == 0.8 and m.resolve("val_auc", per_task) == "val_auc_conversion"
    assert m.value({"val_auc": 0.6, "val_logloss": 0.3}) == 0.6  # a single-task run: the key itself
    assert metrics.Monitor.parse("val_auc").value(per_task) == 0.7  # no task: the first task evaluated
    w = metrics.Monitor.parse({"val_auc": 1, "val_logloss": -1}, task="conversion")
    assert w.value(per_task) == pytest.approx(0.7)
    assert metrics.Monitor.parse("val_auc_click", task="conversion").value(per_task) == 0.7  # explicit task wins
    with pytest.raises(metrics.MetricError, match="train.monitor_task='purchase' names a task the run did not"):
        metrics.Monitor.parse("val_auc", task="purchase").value(per_task)
    with pytest.raises(metrics.MetricError, match="expected a label column name"):
        metrics.Monitor.parse("val_auc", task="not a name")
