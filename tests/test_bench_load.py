"""`bars bench load`: the counting is real (each counter fails on a store damaged on purpose), and a short real
run of the benchmark's code path (3 workers, 20 s; SQLite + journal, and PostgreSQL when its binaries exist)
ends with nothing lost, duplicated or left RUNNING."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bars.benchmarks import load as L
from bars.records import get_client
from bars.study import SKIPPED_ATTR, open_storage, storage_url

STUDY = "lr__movielens_small"


def _hand_built(tmp_path):
    """A journal study (3 finished trials, 1 failed, 1 skipped) and an MLflow store with the runs a sweep
    leaves: a FINISHED parent, one FINISHED run per finished trial, a FAILED run for the failed trial."""
    journal = f"journal://{tmp_path / 'study.journal'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna.create_study(study_name=STUDY, storage=open_storage(journal), direction="maximize")
    client = get_client(uri)
    exp = client.create_experiment("movielens_small")
    parent = client.create_run(exp, tags={"stage": "sweep", "sweep_study": STUDY})
    client.set_terminated(parent.info.run_id, "FINISHED")
    for i, state in enumerate(["complete", "pruned", "complete", "failed", "skipped"]):
        t = study.ask()
        if state == "skipped":
            t.set_user_attr(SKIPPED_ATTR, "budget filled by other workers")
            study.tell(t, state=optuna.trial.TrialState.FAIL)
            continue
        run = client.create_run(exp, tags={"stage": "trial", "sweep_study": STUDY, "trial_number": str(i)})
        t.set_user_attr("mlflow_run_id", run.info.run_id)
        client.set_terminated(run.info.run_id, "FAILED" if state == "failed" else "FINISHED")
        if state == "complete":
            study.tell(t, 0.7 + i / 100)
        elif state == "pruned":
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
    return journal, uri, client, exp


def _count(journal, uri, log=None):
    return L.count_stores("t", STUDY, journal, uri, "movielens_small", log)


def _trial_run(client: MlflowClient, exp: str, number: int) -> str:
    runs = client.search_runs([exp], f"tags.trial_number = '{number}'")
    assert len(runs) == 1
    return runs[0].info.run_id


def test_counts_a_clean_store_and_each_kind_of_damage(tmp_path):
    journal, uri, client, exp = _hand_built(tmp_path)
    c = _count(journal, uri)
    assert c.trials == {"COMPLETE": 2, "FAIL": 1, "PRUNED": 1} and c.skipped == 1
    assert c.runs == {"FAILED": 1, "FINISHED": 3} and c.parent == "FINISHED"
    assert (c.lost, c.duplicated, c.left_running, c.ok) == (0, 0, 0, True)

    client.update_run(_trial_run(client, exp, 2), status="RUNNING")  # a run left RUNNING
    c = _count(journal, uri)
    assert (c.lost, c.duplicated, c.left_running, c.ok) == (0, 0, 1, False)
    assert "is RUNNING in MLflow" in c.problems[0]

    client.delete_run(_trial_run(client, exp, 0))  # a finished trial whose run is gone: lost
    c = _count(journal, uri)
    assert (c.lost, c.left_running) == (1, 1)
    assert any("trial #0 (COMPLETE) has no MLflow run" in p for p in c.problems)

    client.create_run(exp, tags={"stage": "trial", "sweep_study": STUDY, "trial_number": "1"})  # a second run
    c = _count(journal, uri)  # ... which is also RUNNING (never ended)
    assert (c.lost, c.duplicated, c.left_running) == (1, 1, 2)

    client.create_run(exp, tags={"stage": "trial", "sweep_study": STUDY, "trial_number": "4"})  # a skipped trial
    client.create_run(exp, tags={"stage": "trial", "sweep_study": STUDY, "trial_number": "99"})  # no such trial
    c = _count(journal, uri)
    assert c.lost == 3 and sum("in the study" in p for p in c.problems) == 2

    study = optuna.load_study(study_name=STUDY, storage=open_storage(journal))
    study.ask()  # a trial left RUNNING in the Optuna storage
    assert _count(journal, uri).left_running == 5


def test_log_scan_counts_retries_and_errors(tmp_path):
    log = tmp_path / "sweep.log"
    lines = [
        "[w0] bars.tracking: retry 1/4: log metrics against sqlite:///x.db: OperationalError: database is locked",
        "[w0] bars.tracking: retry 2/4: log metrics against sqlite:///x.db: MlflowException: boom",
        "[w1] .../warnings: TrackingWarning: bars.tracking: set tags failed after 5 tries against http://h: x",
        "[w1] Traceback (most recent call last):",
        "[w1] sqlalchemy.exc.OperationalError: (psycopg.OperationalError) server closed the connection",
        "[w1] sweep trial #7 failed:",
        "bars sweep: worker 1 (pid 123) exited with status 1",
        "w0 trial 3/100 (#2) complete val_auc 0.7 | best val_auc 0.7 | 0:10",
    ]
    log.write_text("\n".join(lines) + "\n")
    c = L.Counts("t")
    L.scan_log(c, log.read_text())
    assert (c.retries, c.gave_up, c.storage_errors, c.tracebacks, c.trials_failed_logged, c.workers_failed) == \
        (2, 1, 2, 1, 1, 1)


def test_table_and_verdict():
    good, bad = L.Counts("sqlite", trials={"COMPLETE": 3}), L.Counts("postgres", duplicated=1)
    text = L.table([good, bad])
    assert "complete 3" in text and [v.strip() for v in text.splitlines()[-1].split("|")] == ["verdict", "ok", "FAIL"]
    assert good.ok and not bad.ok


@pytest.mark.parametrize("setup", L.SETUPS)
@pytest.mark.slow
def test_short_real_load_run_nothing_lost_and_damage_is_seen(setup, tmp_path):
    if setup == "postgres" and L.find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    rows = 5000
    L.prepare_data(tmp_path / "data", rows)
    c = L.run_setup(setup, tmp_path, tmp_path / "data", workers=3, seconds=20, rows=rows)
    log = (tmp_path / setup / "sweep.log").read_text()
    assert c.launcher_rc == 0, log[-3000:]
    finished = c.trials.get("COMPLETE", 0) + c.trials.get("PRUNED", 0)
    assert finished >= 3, (c, log[-3000:])  # every worker finished at least the trial it started
    assert sum(c.runs.values()) >= finished and c.parent in ("KILLED", "FINISHED")
    assert c.ok and c.problems == [], (c.problems, log[-3000:])
    assert c.workers_failed == 0 and c.tracebacks == 0, log[-3000:]
    if setup == "sqlite":  # damage the real stores (the PostgreSQL server is gone by now): the counters see it
        from bars.config import compose

        ov = L.sweep_overrides(tmp_path / setup, tmp_path / "data", 3, 20, rows,
                               f"sqlite:///{tmp_path / setup / 'mlflow.db'}", None)
        url = storage_url(compose(ov))
        uri = f"sqlite:///{tmp_path / setup / 'mlflow.db'}"
        client = get_client(uri)
        exp = client.get_experiment_by_name("movielens_small").experiment_id
        runs = client.search_runs([exp], "tags.stage = 'trial' and attributes.status = 'FINISHED'")
        client.update_run(runs[0].info.run_id, status="RUNNING")
        client.delete_run(runs[1].info.run_id)
        again = L.count_stores(setup, STUDY, url, uri, "movielens_small")
        assert (again.left_running, again.lost, again.ok) == (1, 1, False), again.problems
