"""Multi-task runs on the leaderboard: a board of per-task runs is ranked by the dataset's main task
(``train.monitor_task`` recorded by the runs: test AUC of that task), its paired t-test compares that metric, the
page says so; single-task runs on the same dataset (trained on the first label: ``auc`` only) come after them."""

from __future__ import annotations

from bars import leaderboard as lb
from bars.leaderboard_render import render_markdown
from bars.records import RunRecord


def _rec(i, model, seed, metrics_, task="conversion"):
    params = {"data.name": "funnel", "protocol.seed": "2021", "seed": str(seed), "model.id": model,
              "data.bars_split": "None", "model.bars_name": "None", "train.monitor_task": task}
    return RunRecord(run_id=f"r{i}", experiment="funnel", status="FINISHED", start_time=i, end_time=i + 1,
                     tags={"stage": "final", "model": model, "data": "funnel", "seed": str(seed)}, params=params,
                     metrics={"n_params": 10.0, **metrics_})


def _per_task(click: float, conv: float) -> dict:
    return {"test_auc_click": click, "test_logloss_click": 0.3, "test_auc_conversion": conv,
            "test_logloss_conversion": 0.05}


def test_a_multi_task_board_ranks_by_the_main_task():
    recs, i = [], 0
    for seed in (2021, 2022, 2023):
        # mmoe is better on click, esmm on conversion (the main task): esmm must rank first
        for model, click, conv in (("mmoe", 0.80, 0.70), ("esmm", 0.70, 0.75 + (seed - 2021) / 1000)):
            recs.append(_rec(i, model, seed, _per_task(click + (seed - 2021) / 500, conv)))
            i += 1
        recs.append(_rec(i, "dnn", seed, {"test_auc": 0.9, "test_logloss": 0.3}))  # single task: click AUC
        i += 1
    b = lb.build(recs, published={})["funnel"]
    assert b.rank_metric == "auc_conversion"
    assert [r.model for r in b.rows] == ["esmm", "mmoe", "dnn"]
    assert [r.significance for r in b.rows[:2]] == ["best", "sig"]
    assert b.rows[2].test_mean.get("auc_conversion") is None and b.rows[2].test_mean["auc"] == 0.9
    md = render_markdown(b, "store")
    assert "Ranked by test AUC (conversion)" in md and "Test AUC (click) (mean ± std)" in md


def test_without_a_main_task_the_board_ranks_by_auc():
    recs = [_rec(0, "dnn", 2021, {"test_auc": 0.7, "test_logloss": 0.5}, task="None"),
            _rec(1, "fm", 2021, {"test_auc": 0.8, "test_logloss": 0.5}, task="None")]
    b = lb.build(recs, published={})["funnel"]
    assert b.rank_metric == "auc" and [r.model for r in b.rows] == ["fm", "dnn"]
    assert "Ranked by" not in render_markdown(b, "store")
    assert lb.rank_metric_of(("auc_click", "auc_conversion"), ()) == "auc_click"


def test_sweep_trials_table_and_best_trial_read_the_main_task(tmp_path):
    import optuna

    from bars.final import _best_trial_number
    from bars.metrics import Monitor
    from bars.study import trials_table, write_results

    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for x, click, conv in ((0.1, 0.9, 0.6), (0.2, 0.6, 0.8)):  # trial 0 better on click, trial 1 on conversion
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=conv, user_attrs={
            "val_auc_click": click, "val_logloss_click": 0.3, "val_auc_conversion": conv,
            "val_logloss_conversion": 0.1, "epochs": 1, "seconds": 2.0}))
    header, _ = trials_table(study)
    assert header[3:7] == ["val_auc_click", "val_logloss_click", "val_auc_conversion", "val_logloss_conversion"]
    write_results(study, tmp_path)
    assert _best_trial_number(tmp_path, Monitor.parse("val_auc", task="conversion")) == 1
    assert _best_trial_number(tmp_path, Monitor.parse("val_auc", task="click")) == 0
