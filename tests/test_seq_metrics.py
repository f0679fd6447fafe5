"""gAUC as FuxiCTR/BARS compute it, per-task metric keys (<split>_<metric>_<task>) through the registry, the
monitor and the leaderboard, grouped metrics over a meta column, and boards labelled by their protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bars import leaderboard as lb
from bars import metrics
from bars.data.loader import SplitTensors
from bars.leaderboard_render import render_csv, render_markdown
from bars.metrics import Monitor
from bars.records import RunRecord
from bars.train import evaluate


def fuxictr_gauc(y_true, y_pred, group_id) -> float:
    """FuxiCTR 2.x ``evaluate_metrics(..., ["gAUC"], group_id)`` without its process pool: per group
    ``(auc * n, n)`` for groups with both classes, ``(0, 0)`` otherwise; sum of the first over sum of the second."""
    df = pd.DataFrame({"group_index": group_id, "y_true": y_true, "y_pred": y_pred})
    parts = []
    for _, g in df.groupby("group_index"):
        if 0 < g.y_true.sum() < len(g):
            parts.append((roc_auc_score(g.y_true.values, g.y_pred.values) * len(g), len(g)))
        else:
            parts.append((0, 0))
    total = np.array(parts).sum(0)
    return float(total[0] / total[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauc_is_fuxictr_gauc(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.integers(0, 400, n)  # many small groups: plenty with a single class, which are skipped
    y = (rng.random(n) < 0.3).astype(np.float32)
    p = np.clip(0.3 * y + rng.random(n) * 0.8, 0, 1).astype(np.float32)
    p[::7] = 0.5  # ties
    single = sum(1 for g in np.unique(groups) if len(set(y[groups == g])) == 1)
    assert single > 25
    assert metrics.gauc(y, p, groups) == pytest.approx(fuxictr_gauc(y, p, groups), abs=1e-12)


def test_task_keys_parse_and_columns():
    assert metrics.task_key("auc", "click", "val") == "val_auc_click"
    assert metrics.parse_key("test_logloss_conversion") == ("test", "logloss", "conversion")
    assert metrics.parse_key("val_gauc") == ("val", "gauc", None)
    assert metrics.parse_key("val_gauc_click") == ("val", "gauc", "click")  # longest metric prefix wins
    with pytest.raises(metrics.MetricError, match="not a registered metric"):
        metrics.parse_key("val_precision_click")
    keys = ["test_auc", "test_logloss", "test_logloss_click", "test_auc_click", "test_auc_buy", "val_auc_x",
            "n_params", "test_logloss_buy"]
    assert metrics.metric_columns(keys) == ["auc", "logloss", "auc_buy", "logloss_buy", "auc_click", "logloss_click"]
    assert metrics.column_label("auc_click") == "AUC (click)" and metrics.column_label("gauc") == "gAUC"


def test_compute_tasks_is_compute_per_column():
    rng = np.random.default_rng(3)
    y = (rng.random((500, 2)) < 0.4).astype(np.float32)
    p = rng.random((500, 2)).astype(np.float32)
    g = rng.integers(0, 20, 500)
    out = metrics.compute_tasks(torch.from_numpy(y), torch.from_numpy(p), ["click", "buy"], groups=g)
    assert list(out) == ["auc_click", "logloss_click", "gauc_click", "auc_buy", "logloss_buy", "gauc_buy"]
    assert out["auc_buy"] == metrics.auc(y[:, 1], p[:, 1])
    assert out["gauc_click"] == metrics.gauc(y[:, 0], p[:, 0], g)
    with pytest.raises(metrics.MetricError, match=r"must both be \[N, 3\]"):
        metrics.compute_tasks(y, p, ["a", "b", "c"])


def test_monitor_addresses_tasks():
    m = Monitor.parse("val_logloss_conversion")
    assert m.direction == "min" and m.tasks == ("conversion",) and m.name == "val_logloss_conversion"
    w = Monitor.parse({"val_auc_click": 1, "val_auc_conversion": 1})
    assert w.tasks == ("click", "conversion") and w.value({"val_auc_click": 0.7, "val_auc_conversion": 0.8}) == 1.5
    assert Monitor.parse("val_gauc").metrics[0].inputs == ("groups",)
    with pytest.raises(metrics.MetricError, match="per task: val_<metric>_<task>"):
        Monitor.parse("test_auc_click")


class _Const(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return batch["x"].float() + self.w


def test_grouped_metric_over_a_meta_column():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=400).astype(np.float32))
    y = (x + torch.from_numpy(rng.normal(size=400).astype(np.float32)) > 0).float()
    users = torch.from_numpy(rng.integers(0, 30, 400).astype(np.int64))
    split = SplitTensors({"x": x}, y, meta={"user": users})
    out = evaluate(_Const(), split, 128, "cpu", group_column="user")
    assert out["gauc"] == pytest.approx(metrics.gauc(y.numpy(), torch.sigmoid(x).numpy(), users.numpy()))
    with pytest.raises(ValueError, match="not a feature or meta column"):
        evaluate(_Const(), split, 128, "cpu", group_column="item")


def _rec(i, model, seed, protocol, metrics_):
    params = {"data.name": "seqd", "protocol.seed": "2021", "seed": str(seed), "model.id": model,
              "data.bars_split": "None", "model.bars_name": "None"}
    if protocol:
        params["data.protocol_name"] = protocol
    return RunRecord(run_id=f"r{i}", experiment="seqd", status="FINISHED", start_time=i, end_time=i + 1,
                     tags={"stage": "final", "model": model, "data": "seqd", "seed": str(seed)}, params=params,
                     metrics={"n_params": 10.0, **metrics_})


def test_leaderboard_boards_per_protocol_with_task_and_gauc_columns():
    recs = []
    for i, (protocol, seed) in enumerate([("bars-seq", 2021), ("bars-seq", 2022), ("holdout", 2021)]):
        recs.append(_rec(i, "dnn", seed, protocol, {
            "test_auc": 0.7 + i / 100, "test_logloss": 0.5, "test_gauc": 0.6,
            "test_auc_click": 0.71, "test_logloss_click": 0.4, "test_auc_buy": 0.8, "test_logloss_buy": 0.1}))
    boards = lb.build(recs, published={})
    assert sorted(boards) == ["seqd.bars-seq", "seqd.holdout"]
    b = boards["seqd.bars-seq"]
    assert b.protocol == "bars-seq" and len(b.rows) == 1 and b.rows[0].n == 2
    assert b.metrics == ("auc", "logloss", "gauc", "auc_buy", "logloss_buy", "auc_click", "logloss_click")
    md = render_markdown(b, "store")
    assert "validated on the TEST set" in md and "Test AUC (click) (mean ± std)" in md and "Test gAUC" in md
    assert "test_auc_buy_mean" in render_csv(b).splitlines()[0]
    assert "held-out part of train" in render_markdown(boards["seqd.holdout"], "store")
    assert sorted(lb.build(recs, published={}, datasets=["seqd"])) == ["seqd.bars-seq", "seqd.holdout"]
