"""Sweeps for real: trials through ``bars.run.train_one`` on a tiny movielens_small, MLflow parent + child runs,
worker processes on one journal file and on a throwaway PostgreSQL server, kill -9 of a worker mid-trial, kill
of the whole sweep and resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from pg import postgres_url  # noqa: F401  (fixture)

from bars import study as ST
from bars import sweep as S
from bars.config import PROJECT_ROOT, compose
from bars.process import identity_alive

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY_SPACE = """\
train.learning_rate: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
train.embedding_regularizer: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
model.params.dropout: {type: float, low: 0.0, high: 0.3, step: 0.1}
model.params.num_cross_layers: {type: int, low: 1, high: 3}
model.params.dnn_hidden_units: [[64, 64], [128, 64]]
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Prepared tiny data and the tiny search space, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("sweep-e2e")
    space = root / "search"
    space.mkdir()
    (space / "dcn.yaml").write_text(TINY_SPACE)
    from bars.data.prepare import prepare

    for rows in (3000, 12000):
        prepare(compose(["data=movielens_small", f"data.rows={rows}", f"paths.data={root / 'data'}"]))
    return root


# the kill tests' batch size: 75 steps an epoch of their 12,000 rows, so that a trial stays between its first and
# its last epoch long enough to be caught there (at 512, a fast host ran the whole 3-trial sweep in 3 s, between
# two polls)
KILL_BATCH = 128


def base(shared: Path, tmp_path: Path, rows: int, *extra: str, batch_size: int = 512) -> list[str]:
    return ["model=dcn", "data=movielens_small", f"data.rows={rows}", f"paths.data={shared / 'data'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"sweep.dir={tmp_path / 'sw'}",
            f"sweep.search_dir={shared / 'search'}", "sweep.progress=plain", f"train.batch_size={batch_size}",
            "train.eval_batch_size=4096", "sweep.threads=1", *extra]


def mlflow_runs(tmp_path: Path) -> list:
    from bars.records import get_client

    c = get_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("movielens_small")
    return list(c.search_runs([exp.experiment_id], max_results=1000)) if exp else []


def read_trials(tmp_path: Path) -> list[dict]:
    return list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))


def launch(ov: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "bars.cli", "sweep", *ov], cwd=PROJECT_ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def study_of(ov: list[str]) -> optuna.Study:
    cfg = compose(ov)
    return ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), 0)


def kill_a_worker_mid_trial(ov: list[str], proc: subprocess.Popen, log: Path, timeout: float = 150) -> tuple:
    """Wait until some trial has finished an epoch, has two or more left and is still running; kill -9 its worker."""
    deadline = time.monotonic() + timeout
    cfg = compose(ov)
    storage = None  # opened once: a new RDB storage per poll leaks connections (PostgreSQL: "too many clients")
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            storage = storage or ST.open_storage(ST.storage_url(cfg), cfg)
            study = ST.load_study(cfg, storage, 0)
        except (ST.SweepError, KeyError, FileNotFoundError):
            time.sleep(0.3)
            continue
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            ident = t.user_attrs.get(ST.WORKER_ATTR)
            # at least two epochs left: a trial on its last epoch may finish between this read and the kill
            if ident and 0 < len(t.intermediate_values) <= int(cfg.train.max_epochs) - 2 and identity_alive(ident):
                pid = int(ident.rsplit(":", 2)[1])
                os.kill(pid, signal.SIGKILL)
                return t.number, dict(t.params), pid
        time.sleep(0.2)
    raise AssertionError("no trial to kill: " + log.read_text()[-3000:])


def assert_no_running_runs(tmp_path: Path, n_children: int | None = None) -> list:
    runs = mlflow_runs(tmp_path)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    children = [r for r in runs if r.data.tags.get("stage") == "trial"]
    if n_children is not None:
        assert len(children) == n_children
    return children


def test_real_sweep_records_mlflow_and_resumes(shared, tmp_path):
    ov = base(shared, tmp_path, 3000, "sweep.trials=2", "train.max_epochs=2")
    summary = S.sweep(compose(ov), ov)
    assert summary["finished"] == 2, summary
    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sampler"] == "optuna.samplers.TPESampler"
    assert parent.data.params["optuna_version"] == optuna.__version__
    assert '"multivariate": true' in parent.data.params["sampler_settings"]
    children = assert_no_running_runs(tmp_path, 2)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1]
    states = {int(r.data.tags["trial_number"]): r.data.tags["state"] for r in children}
    rows = read_trials(tmp_path)
    assert states == {int(r["number"]): r["state"] for r in rows}
    assert all(int(r["epochs"]) >= 1 and float(r["val_auc"]) > 0.5 for r in rows)
    best = (tmp_path / "sw" / "best.overrides").read_text().split()
    assert any(o.startswith("model.params.dnn_hidden_units=[") for o in best)
    # rerun with a larger budget: same study, same parent run, one more child
    ov2 = [*ov, "sweep.trials=3"]
    assert S.sweep(compose(ov2), ov2)["finished"] == 3
    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.run_id == parent.info.run_id
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["trials_finished"] == 3
    assert_no_running_runs(tmp_path, 3)
    # make final: the best configuration with 2 seeds, stage=final, seed 0 = the protocol seed
    from bars.final import run_final

    fov = [*ov, "final.seeds=2"]
    run_final(compose(fov), fov)
    finals = [r for r in mlflow_runs(tmp_path) if r.data.tags.get("stage") == "final"]
    assert sorted(int(r.data.tags["seed"]) for r in finals) == [2021, 2022]
    best = dict(o.split("=", 1) for o in (tmp_path / "sw" / "best.overrides").read_text().split())
    assert all(r.data.params["model.params.dnn_hidden_units"].replace(" ", "") ==
               best["model.params.dnn_hidden_units"] for r in finals)


def test_two_journal_workers_survive_kill9_of_one(shared, tmp_path):
    ov = base(shared, tmp_path, 12000, "sweep.trials=3", "sweep.workers=2", "train.max_epochs=4",
              "sweep.pruner.name=median", "sweep.pruner.median.n_startup_trials=1000", "sweep.poll=0.5",
              batch_size=KILL_BATCH)
    log = tmp_path / "sweep.log"
    proc = launch(ov, log)
    try:
        number, _, pid = kill_a_worker_mid_trial(ov, proc, log)
        assert proc.wait(timeout=200) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    study = study_of(ov)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[number].state == optuna.trial.TrialState.FAIL  # marked failed ...
    finished = [t for t in ST.counted(trials.values()) if t.state in ST.FINISHED]
    assert len(finished) == 3  # ... and replaced: the full budget of finished trials
    assert f"exited with status -{int(signal.SIGKILL)}" in text
    rows = read_trials(tmp_path)
    assert sum(r["state"] in ("complete", "pruned") for r in rows) == 3
    children = assert_no_running_runs(tmp_path)  # the killed trial's run was reconciled
    killed = [r for r in children if r.data.tags["trial_number"] == str(number)]
    assert len(killed) == 1 and killed[0].info.status == "FAILED" and killed[0].data.tags["state"] == "failed"
    workers = {t.user_attrs.get(ST.WORKER_ATTR, "").rsplit(":", 2)[1] for t in trials.values()}
    assert len(workers) == 2 and str(pid) in workers  # two processes worked on the one study
    # placement (bars.placement): no GPU here, so two CPU workers, each trial run naming its worker and device
    assert "2 workers (worker processes): cpu x2" in text
    assert {(r.data.tags["sweep_device"], r.data.tags["sweep_device_workers"]) for r in children} == {("cpu", "2")}
    assert {r.data.tags["sweep_worker"] for r in children} == {"0", "1"}


def test_kill_whole_sweep_and_rerun_resumes(shared, tmp_path):
    ov = base(shared, tmp_path, 12000, "sweep.trials=3", "train.max_epochs=4",
              "sweep.pruner.name=median", "sweep.pruner.median.n_startup_trials=1000", batch_size=KILL_BATCH)
    log = tmp_path / "sweep.log"
    proc = launch(ov, log)
    try:
        kill_a_worker_mid_trial(ov, proc, log)  # workers=1: the worker is the launcher itself
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = {t.number: t.state for t in study_of(ov).get_trials()}
    assert optuna.trial.TrialState.RUNNING in before.values()
    time.sleep(max(0.0, ST.STALE_MIN_AGE - 1))
    log2 = tmp_path / "sweep2.log"
    proc2 = launch(ov, log2)
    assert proc2.wait(timeout=120) == 0, log2.read_text()[-3000:]
    after = {t.number: t for t in study_of(ov).get_trials()}
    for n, st in before.items():  # nothing completed before the kill is lost or repeated
        if st in ST.FINISHED:
            assert after[n].state == st
        if st == optuna.trial.TrialState.RUNNING:
            assert after[n].state == optuna.trial.TrialState.FAIL
    assert sum(t.state in ST.FINISHED for t in after.values()) == 3
    assert_no_running_runs(tmp_path)
    assert len([r for r in mlflow_runs(tmp_path) if r.data.tags.get("stage") == "sweep"]) == 1


def test_postgres_two_workers_retry_killed_trial_with_same_params(shared, tmp_path, postgres_url):  # noqa: F811
    ov = base(shared, tmp_path, 12000, "sweep.trials=3", "sweep.workers=2", "train.max_epochs=4",
              f"sweep.storage={postgres_url}", "sweep.heartbeat_interval=1", "sweep.grace_period=4",
              "sweep.pruner.name=median", "sweep.pruner.median.n_startup_trials=1000", "sweep.poll=0.5",
              batch_size=KILL_BATCH)
    log = tmp_path / "sweep.log"
    proc = launch(ov, log)
    try:
        number, params, _ = kill_a_worker_mid_trial(ov, proc, log)
        assert proc.wait(timeout=200) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    study = study_of(ov)
    trials = study.get_trials()
    assert {t.number: t.state for t in trials}[number] == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert retries, [(t.number, t.state, t.system_attrs) for t in trials]
    assert retries[0].params == params and retries[0].state in ST.FINISHED
    assert retries[0].user_attrs.get("retry_of") == number
    assert sum(t.state in ST.FINISHED for t in ST.counted(trials)) == 3
    assert_no_running_runs(tmp_path)
