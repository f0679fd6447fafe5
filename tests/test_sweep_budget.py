"""Compute accounting per trial and the fair-budget mode (``sweep.budget``, bars.compute): the syntax, the
compute a real trial records (Optuna user attributes, trials.csv, its MLflow run), and budgeted sweeps that stop
at the budget with two workers on one journal file and on PostgreSQL (real Optuna storage; the two workers are
threads of this process with a stand-in trainer that reports rows per epoch, so the race is real and fast)."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from omegaconf import OmegaConf
from pg import postgres_url  # noqa: F401  (fixture)

from bars import compute as C
from bars import study as ST
from bars import sweep as S
from bars.config import compose
from bars.train import EpochLog
from bars.validate import ConfigError, validate

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROWS_PER_EPOCH = 1000  # the stand-in trainer's training rows per epoch


# ------------------------------------------------------------------------------------------------------ syntax
@pytest.mark.parametrize("value, unit, amount", [
    (5000000, "samples", 5e6), (5e6, "samples", 5e6), ("5e6", "samples", 5e6), ("5M samples", "samples", 5e6),
    ("250k samples", "samples", 2.5e5), ("1.5G samples", "samples", 1.5e9), ("600s", "seconds", 600),
    ("30m", "seconds", 1800), ("30min", "seconds", 1800), ("2h", "seconds", 7200), ("1.5 h", "seconds", 5400),
])
def test_budget_syntax(value, unit, amount):
    b = C.parse_budget(value)
    assert (b.unit, b.amount) == (unit, amount)
    assert C.Budget.from_record(b.as_record()) == b


@pytest.mark.parametrize("value, match", [
    ("5M", "'5M' has no unit: write '5M samples' for training samples, or '5min' for minutes"),
    ("5k", "write '5k samples'"), ("ten minutes", "got 'ten minutes'"), ("-3s", "got '-3s'"),
    (0, "must be positive"), (True, "got True"), ("5 days", "got '5 days'"),
])
def test_budget_syntax_errors_name_the_key(value, match):
    with pytest.raises(C.BudgetSyntaxError, match="sweep.budget") as e:
        C.parse_budget(value)
    assert match in str(e.value)


def test_budget_is_validated_before_anything_starts(tmp_path):
    base = ["model=dcn", "data=movielens_small", "tracking.enabled=false", f"sweep.dir={tmp_path / 'sw'}"]
    with pytest.raises(ConfigError, match="sweep.budget .*got '5M'"):
        validate(compose([*base, "sweep.budget=5M"]), "sweep")
    with pytest.raises(ConfigError, match="needs a budget"):
        validate(compose([*base, "sweep.trials=null"]), "sweep")
    validate(compose([*base, "sweep.trials=null", "sweep.budget=5M samples"]), "sweep")
    assert not (tmp_path / "sw").exists()


# ------------------------------------------------------------------------------------- budgeted sweeps (stand-in)
def counting_train(cfg, *, on_epoch=None, parent_run_id=None, extra_tags=None, quiet=False):
    """Reports ROWS_PER_EPOCH training rows per epoch (cumulative, as bars.train does) and a little wall time;
    the AUC peaks at learning rate 1e-3."""
    import math

    lr = float(cfg.train.learning_rate)
    best, epochs = 0.0, int(cfg.train.max_epochs)
    for e in range(1, epochs + 1):
        time.sleep(0.02)
        v = 0.8 - 0.05 * abs(math.log10(lr) + 3) + 0.002 * e
        best = max(best, v)
        if on_epoch:
            on_epoch(EpochLog(epoch=e, train_loss=0.5, val={"auc": v, "logloss": 0.5}, monitor=v, lr=lr,
                              samples_per_s=1.0, seconds=0.0, improved=True, strikes=0,
                              train_samples=ROWS_PER_EPOCH * e, valid_samples=100 * e))
    return SimpleNamespace(run_id=None, metrics={"val_auc": best, "val_logloss": 0.5}, epochs=epochs,
                           samples={C.TRAIN_SAMPLES: ROWS_PER_EPOCH * epochs, C.VALID_SAMPLES: 100 * epochs,
                                    C.TEST_SAMPLES: 50})


def budget_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return ["model=dcn", "data=movielens_small", f"sweep.dir={tmp_path / 'sw'}", "tracking.enabled=false",
            "sweep.progress=off", "train.max_epochs=3", "sweep.trials=null", "sweep.poll=0.05", *extra]


def two_thread_workers(ov: list[str]) -> list[ST.BudgetState]:
    """The launcher creates the study with no local worker; two workers (threads, each with its own storage
    handle) run it to the end."""
    cfg = compose([*ov, "sweep.workers=0"])
    S.sweep(cfg, [*ov, "sweep.workers=0"], train_fn=counting_train)
    out: list = [None, None]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            wcfg = compose([*ov, "sweep.role=worker", f"sweep.worker_index={i}"])
            out[i] = S.run_worker(wcfg, replay=[], train_fn=counting_train, tracking=False, progress_mode="verbose",  # no stdout redirect: threads
                                  storage=ST.open_storage(ST.storage_url(wcfg), wcfg))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def check_stopped_at_budget(study: optuna.Study, budget: float, per_trial: float, workers: int) -> None:
    trials = ST.counted(study.get_trials())
    used = [ST.trial_compute(t) for t in trials]
    spent = sum(u.get(C.TRAIN_SAMPLES, 0) for u in used)
    assert all(t.state in ST.FINISHED for t in trials)  # complete or pruned: no skipped race loser counted
    # each trial's own rows (never a sum with another's): epochs x rows per epoch
    assert all(u[C.TRAIN_SAMPLES] == ROWS_PER_EPOCH * t.user_attrs["epochs"] for t, u in zip(trials, used))
    # reached, and overshot by at most the trials that were running elsewhere when it was reached
    assert budget <= spent < budget + workers * per_trial


def test_budgeted_sweep_two_workers_journal_stops_at_budget_and_resumes(tmp_path):
    ov = budget_overrides(tmp_path, "sweep.budget=10k samples")
    states = two_thread_workers(ov)
    assert all(s.done for s in states)
    study = ST.load_study(compose(ov), ST.open_storage(ST.storage_url(compose(ov))), 0)
    check_stopped_at_budget(study, 10_000, 3 * ROWS_PER_EPOCH, 2)
    assert study.user_attrs["compute_budget"] == {"unit": "samples", "amount": 10000.0, "spec": "10k samples"}
    n = len(ST.counted(study.get_trials()))
    # the launcher again: nothing trains, results and the overshoot reported
    summary = S.sweep(compose(ov), ov, train_fn=counting_train)
    assert summary["finished"] == n and summary["done"]
    spent = sum(ST.trial_compute(t)[C.TRAIN_SAMPLES] for t in ST.counted(study.get_trials()))  # a race loser ran nothing
    assert summary["compute_spent"] == spent and summary["overshoot"] == spent - 10_000
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert [int(r[C.TRAIN_SAMPLES]) for r in rows] == [1000 * int(r["epochs"]) for r in rows]
    assert all(r[C.CLOCK] == "cpu" and float(r[C.CPU_S]) >= 0 and float(r[C.WALL_S]) > 0.05 for r in rows)
    # a larger budget continues the same study
    ov2 = [*ov[:-1], "sweep.budget=16k samples"]
    S.sweep(compose(ov2), ov2, train_fn=counting_train)
    study = ST.load_study(compose(ov2), ST.open_storage(ST.storage_url(compose(ov2))), 0)
    assert len(ST.counted(study.get_trials())) > n
    check_stopped_at_budget(study, 16_000, 3 * ROWS_PER_EPOCH, 1)


def test_trial_cap_still_applies_with_a_compute_budget(tmp_path):
    ov = budget_overrides(tmp_path, "sweep.budget=1G samples", "sweep.trials=3")
    summary = S.sweep(compose(ov), ov, train_fn=counting_train)
    assert summary["finished"] == 3 and summary["done"] and summary["overshoot"] == 9000 - 1e9


def test_budgeted_sweep_two_workers_postgres(tmp_path, postgres_url):  # noqa: F811
    ov = budget_overrides(tmp_path, "sweep.budget=7000", f"sweep.storage={postgres_url}")
    two_thread_workers(ov)
    cfg = compose(ov)
    study = ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), 0)
    check_stopped_at_budget(study, 7000, 3 * ROWS_PER_EPOCH, 2)


def test_seconds_budget_counts_the_trial_clock_and_skips_race_losers(tmp_path):
    ov = budget_overrides(tmp_path, "sweep.budget=100s")
    cfg = compose(ov)
    study = ST.create_study(cfg, ST.open_storage(ST.storage_url(cfg)), S.space_of(cfg))
    budget = ST.compute_budget_of(study, None)
    assert budget.unit == "seconds" and budget.amount == 100
    a, b, c = study.ask(), study.ask(), study.ask()
    a.set_user_attr(C.OWNER, a.number)
    a.set_user_attr(C.CLOCK, "cpu")
    a.set_user_attr(C.CPU_S, 60.0)
    b.set_user_attr(C.OWNER, b.number)
    b.set_user_attr(C.CLOCK, "device")  # a GPU worker: its device (wall) seconds count, not its CPU-seconds
    b.set_user_attr(C.CPU_S, 1.0)
    b.set_user_attr(C.DEVICE_S, 45.0)
    assert ST.budget_state(study, None).spent == 105.0 and ST.budget_state(study, None).done
    ST.claim_or_skip(study, b, None, budget)  # 60 s ahead of it: it may run
    with pytest.raises(ST.OverBudget):
        ST.claim_or_skip(study, c, None, budget)  # 105 s ahead of it: the budget is spent
    study.tell(c, state=optuna.trial.TrialState.FAIL)
    assert [t.number for t in ST.counted(study.get_trials())] == [a.number, b.number]
    # a retried trial inherits its predecessor's user attributes: they are not its own compute
    d = study.ask()
    for k, v in a.user_attrs.items():
        d.set_user_attr(k, v)
    assert ST.trial_compute(d) == {} and ST.budget_state(study, None).spent == 105.0


def test_gpu_worker_counts_device_seconds(tmp_path):
    """A worker placed on a GPU records its wall seconds as device seconds, and a seconds budget counts those
    (the stand-in trainer ignores the device: this checks the bookkeeping, not CUDA)."""
    ov = budget_overrides(tmp_path, "sweep.budget=0.2s", "sweep.workers=0")
    S.sweep(compose(ov), ov, train_fn=counting_train)  # creates the study
    cfg = compose([*ov, "sweep.role=worker", "sweep.worker_index=0"])
    tally = S.run_worker(cfg, replay=[], train_fn=counting_train, tracking=False, progress_mode="off",
                         device="cuda:0", device_workers=1)
    assert tally.done and tally.compute.unit == "seconds"
    study = ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg)), 0)
    used = [ST.trial_compute(t) for t in ST.counted(study.get_trials())]
    assert used and all(u[C.CLOCK] == "device" and u[C.DEVICE_S] == u[C.WALL_S] > 0.05 for u in used)
    assert tally.spent == pytest.approx(sum(u[C.DEVICE_S] for u in used))
    assert tally.spent >= 0.2 > tally.spent - used[-1][C.DEVICE_S]  # the last trial crossed the budget


# ----------------------------------------------------------------------------------------------- real training
def test_real_trials_record_their_compute(tmp_path):
    """Three trials through bars.run.train_one on 3000 rows of movielens_small: a complete trial trained rows x
    epochs, a trial pruned after its first epoch fewer; CPU and wall seconds; trials.csv and the MLflow runs."""
    from bars.records import get_client

    pruned_at = {1}  # trial number -> pruned after epoch 1 (a real pruning signal through the real trainer)

    def train(cfg, *, on_epoch=None, **kw):
        from bars.run import train_one

        number = int(kw["extra_tags"]["trial_number"])

        def cb(log):
            on_epoch(log)
            if number in pruned_at and log.epoch == 1:
                raise optuna.TrialPruned("scripted")

        return train_one(cfg, on_epoch=cb, **kw)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ov = ["model=dcn", "data=movielens_small", "data.rows=3000", f"paths.data={tmp_path / 'data'}",
          f"paths.checkpoints={tmp_path / 'ckpt'}", f"tracking.uri={uri}", f"sweep.dir={tmp_path / 'sw'}",
          "sweep.progress=off", "sweep.trials=3", "train.max_epochs=2",
          "train.batch_size=512", "model.params.dnn_hidden_units=[32]", "train.num_threads=1", "train.device=cpu"]
    summary = S.sweep(compose(ov), ov, train_fn=train)
    assert summary["finished"] == 3
    cfg = compose(ov)
    study = ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg)), 0)
    client = get_client(uri)
    by_state = {}
    for t in study.get_trials():
        used = ST.trial_compute(t)
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        rows = {s: int(run.data.tags[f"rows_{s}"]) for s in ("train", "valid", "test")}
        epochs = int(t.user_attrs["epochs"])
        assert used[C.TRAIN_SAMPLES] == rows["train"] * epochs
        assert used[C.VALID_SAMPLES] == rows["valid"] * epochs
        assert used[C.CPU_S] > 0 and used[C.WALL_S] > 0 and used[C.CLOCK] == "cpu"
        assert run.data.metrics[C.TRAIN_SAMPLES] == used[C.TRAIN_SAMPLES]
        assert run.data.metrics[C.CPU_S] == pytest.approx(used[C.CPU_S])
        complete = t.state == optuna.trial.TrialState.COMPLETE
        assert used[C.TEST_SAMPLES] == (rows["test"] if complete else 0)  # a pruned trial is never tested
        by_state.setdefault(t.state, []).append(used)
    comp, pruned = by_state[optuna.trial.TrialState.COMPLETE], by_state[optuna.trial.TrialState.PRUNED]
    assert len(pruned) == 1 and len(comp) == 2
    assert pruned[0][C.TRAIN_SAMPLES] < min(c[C.TRAIN_SAMPLES] for c in comp)
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert sum(int(r[C.TRAIN_SAMPLES]) for r in rows) == sum(u[C.TRAIN_SAMPLES] for u in comp + pruned)
    # the parent run has the sweep's totals
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.metrics[C.TRAIN_SAMPLES] == sum(u[C.TRAIN_SAMPLES] for u in comp + pruned)


def test_fit_counts_a_partial_epoch(movielens_folder):
    """An epoch cut short by an exception counts the batches it trained (a failed trial's compute)."""
    from bars.data.loader import load_dataset
    from bars.models import build
    from bars.train import TrainConfig, fit

    ds = load_dataset(movielens_folder)
    cfg = compose(["model=lr", "data=movielens_small", "train.batch_size=1000", "train.device=cpu",
                   "train.max_epochs=3"])
    model = build(cfg.model.name, ds.spec, OmegaConf.to_container(cfg.model.params))
    calls = {"n": 0}
    forward = model.forward

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == n_batches + 3:  # the 3rd batch of epoch 2
            raise RuntimeError("boom")
        return forward(*a, **k)

    n_train = len(ds.splits["train"])
    n_batches = -(-n_train // 1000)
    model.forward = boom
    meter = C.SampleMeter()
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, ds.splits["train"], ds.splits["valid"], TrainConfig.from_cfg(cfg.train), seed=1,
            meter=meter, evaluate_fn=lambda m, s, b, d: {"auc": 0.5, "logloss": 0.7})
    assert meter.train == n_train + 2 * 1000 and meter.valid == len(ds.splits["valid"])
