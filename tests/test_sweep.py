"""bars.sweep without training: search spaces against the composed configs, override formatting, the budget
across workers, stale trials, results files, resume. Fast (a stand-in training function, no MLflow)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from omegaconf import OmegaConf

from bars import search as SP
from bars import study as ST
from bars import sweep as S
from bars import sweep_progress as PR
from bars.config import CONF_DIR, compose
from bars.models import list_models
from bars.train import EpochLog

optuna.logging.set_verbosity(optuna.logging.WARNING)


def epoch_log(epoch: int, auc: float, logloss: float = 0.5) -> EpochLog:
    """The trainer's per-epoch record for a scripted validation AUC (monitor: val_auc)."""
    return EpochLog(epoch=epoch, train_loss=0.5, val={"auc": auc, "logloss": logloss}, monitor=auc, lr=1e-3,
                    samples_per_s=1.0, seconds=0.0, improved=True, strikes=0)


def fake_train(cfg, *, on_epoch=None, parent_run_id=None, extra_tags=None, quiet=False):
    """Deterministic in the trial's parameters: AUC peaks at learning rate 1e-3."""
    import math

    lr = float(cfg.train.learning_rate)
    best = 0.0
    epochs = int(cfg.train.max_epochs)
    for e in range(1, epochs + 1):
        v = 0.8 - 0.05 * abs(math.log10(lr) + 3) + 0.002 * e
        best = max(best, v)
        if on_epoch:
            on_epoch(epoch_log(e, v))
    return SimpleNamespace(run_id=None, metrics={"val_auc": best, "val_logloss": 0.5}, epochs=epochs)


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    return ["model=dcn", "data=movielens_small", f"sweep.dir={tmp_path / 'sw'}", "tracking.enabled=false",
            "sweep.progress=off", "train.max_epochs=3", *extra]


# ------------------------------------------------------------------------------------------ search spaces


MODEL_CONFIGS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))  # registered models + variants


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_every_model_has_a_search_space_that_fits_its_config(model):
    cfg = compose([f"model={model}"])  # default data: movielens_small, whose data file narrows the space
    assert SP.load_search_space(model)
    SP.validate_space(SP.load_search_space(model), cfg)
    space = SP.space_of(cfg)
    SP.validate_space(space, cfg)
    # every suggestion is a valid override: applying it keeps the model buildable
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    from bars.models.registry import config_class

    for _ in range(8):
        t = study.ask()
        params = {k: p.suggest(t) for k, p in space.items()}
        tcfg = compose([f"model={model}", *SP.to_overrides(params)])
        for k, v in params.items():
            got = OmegaConf.select(tcfg, k)
            if isinstance(v, float):
                assert got == pytest.approx(v, rel=1e-10), k
            else:
                assert (list(got) if isinstance(v, list) else got) == v, k
        p = OmegaConf.to_container(tcfg.model.params, resolve=True)
        cls = config_class(str(tcfg.model.name))
        cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})  # validates combinations
        study.tell(t, 0.5)


def test_search_spaces_exist_only_for_registered_models():
    """One search space per model config id (conf/model/<id>.yaml; the registered models' ids are their keys)."""
    files = {p.stem for p in SP.SEARCH_DIR.glob("*.yaml")} - {"common"}
    ids = {p.stem for p in (SP.SEARCH_DIR.parent / "model").glob("*.yaml")}
    methods = {p.stem for p in (SP.SEARCH_DIR.parent / "method").glob("*.yaml")}  # method_<name>: a method's space
    assert {f for f in files if f.startswith("method_")} <= {f"method_{m}" for m in methods}
    assert {f for f in files if not f.startswith("method_")} == ids and set(list_models()) <= ids


def test_variants_have_their_own_space_and_study():
    """crossnet is model dcn, but its space (no MLP keys) and its study are its own."""
    cfg = compose(["model=crossnet", "data=frappe_x1"])
    space = SP.space_of(cfg)
    assert "model.params.dnn_hidden_units" not in space and "model.params.dropout" not in space
    assert space["model.params.num_cross_layers"].high >= 15
    assert cfg.sweep.study == "crossnet__frappe_x1"
    assert compose(["model=dcn", "data=frappe_x1", "preset=bars"]).sweep.study == "dcn__frappe_x1__bars"


def test_search_space_covers_bars_grid_for_dcn():
    space = SP.load_search_space("dcn")
    assert space["model.params.num_cross_layers"].low == 1 and space["model.params.num_cross_layers"].high >= 6
    reg = space["train.embedding_regularizer"]
    assert reg.log and reg.low <= 1e-5 and reg.high >= 0.1
    assert space["model.params.dropout"].low == 0.0 and space["model.params.dropout"].high >= 0.5
    assert (400, 400, 400) in space["model.params.dnn_hidden_units"].choices


def test_unknown_key_is_an_error_listing_nearest_keys(tmp_path):
    d = tmp_path / "search"
    d.mkdir()
    (d / "common.yaml").write_text("train.learning_rat: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    (d / "dcn.yaml").write_text("model.params.num_cros_layers: {type: int, low: 1, high: 6}\n")
    cfg = compose(overrides(tmp_path, f"sweep.search_dir={d}"))
    from bars.validate import ConfigError

    with pytest.raises(ConfigError) as e:  # bars.validate: the whole config, the search space included
        S.sweep(cfg, [], train_fn=fake_train)
    msg = str(e.value)
    assert "train.learning_rat" in msg and "train.learning_rate" in msg
    assert "model.params.num_cros_layers" in msg and "model.params.num_cross_layers" in msg
    assert not (tmp_path / "sw").exists()  # nothing created before the check


@pytest.mark.parametrize("spec, err", [
    ("{type: float, low: 1, high: 0}", "low <= high"),
    ("{type: float, low: 0, high: 1, log: true}", "log scale"),
    ("{type: gauss, low: 0, high: 1}", "unknown type"),
    ("{type: categorical, choices: []}", "non-empty"),
    ("{type: int, low: 1, high: 3, bogus: 1}", "takes low, high"),
])
def test_bad_param_specs(tmp_path, spec, err):
    (tmp_path / "dcn.yaml").write_text(f"train.learning_rate: {spec}\n")
    with pytest.raises(SP.SearchSpaceError, match=err):
        SP.load_search_space("dcn", tmp_path)


def test_model_file_drops_and_overrides_common_keys(tmp_path):
    (tmp_path / "common.yaml").write_text("a.b: [1, 2]\nc.d: {type: int, low: 1, high: 2}\ne.f: [1, 2]\n")
    (tmp_path / "m.yaml").write_text("a.b: null\nc.d: {type: int, low: 3, high: 4}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.yaml").write_text("c.d: {type: int, low: 3, high: 3}\ne.f: null\nx.y: [1]\n")
    space = SP.load_search_space("m", tmp_path)
    assert list(space) == ["c.d", "e.f"] and space["c.d"].low == 3
    narrowed = SP.load_search_space("m", tmp_path, "d")  # narrows existing keys only
    assert list(narrowed) == ["c.d"] and narrowed["c.d"].high == 3
    with pytest.raises(SP.SearchSpaceError, match="search spaces exist for"):
        SP.load_search_space("nope", tmp_path)


def test_override_formatting_is_replayable_without_spaces():
    params = {"train.learning_rate": 0.00012345678901234, "model.params.batch_norm": False,
              "model.params.hidden_units": [400, 400, 400], "model.params.dropout": 0.30000000000000004,
              "model.params.model_structure": "parallel", "x.y": None}
    ovs = SP.to_overrides(params)
    assert all(" " not in o for o in ovs)
    assert "model.params.dropout=0.3" in ovs and "model.params.hidden_units=[400,400,400]" in ovs
    cfg = compose(["model=dcnv2", *[o for o in ovs if not o.startswith(("x.y", "model.params.hidden"))]])
    assert cfg.model.params.batch_norm is False and cfg.model.params.model_structure == "parallel"
    assert abs(cfg.train.learning_rate - 0.00012345678901234) < 1e-15


# ------------------------------------------------------------------------------------- sweeps, no training


def test_sweep_budget_results_and_resume(tmp_path):
    ov = overrides(tmp_path, "sweep.trials=6", "train.weight_decay_unused=1" if False else "train.batch_size=512")
    cfg = compose(ov)
    summary = S.sweep(cfg, ov, train_fn=fake_train)
    assert summary["finished"] == 6 and summary["budget"] == 6
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert set(rows[0]) >= {"number", "state", "train.learning_rate", "val_auc", "val_logloss", "epochs",
                            "seconds"}
    best = (tmp_path / "sw" / "best.overrides").read_text().split()
    assert "train.batch_size=512" in best  # the command's training overrides are replayed too
    assert not any(o.startswith(("sweep.", "model=", "data=", "tracking.")) for o in best)
    # the best overrides compose and reproduce the best trial's parameters
    rcfg = compose(["model=dcn", *best])
    top = max((r for r in rows if r["state"] == "complete"), key=lambda r: float(r["val_auc"]))
    assert abs(rcfg.train.learning_rate - float(top["train.learning_rate"])) < 1e-12

    # rerun: budget reached -> nothing trains, results rewritten
    calls = []
    summary2 = S.sweep(cfg, ov, train_fn=lambda *a, **k: calls.append(1))
    assert calls == [] and summary2["finished"] == 6
    # a larger budget resumes the same study; no parameter set repeats a completed trial
    ov3 = [*ov, "sweep.trials=9"]
    summary3 = S.sweep(compose(ov3), ov3, train_fn=fake_train)
    assert summary3["finished"] == 9
    study = ST.load_study(compose(ov3), ST.open_storage(ST.storage_url(compose(ov3))), 0)
    assert len(study.trials) == 9
    keys = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(keys)) == len(keys)
    attrs = study.user_attrs
    assert attrs["sampler"] == "optuna.samplers.TPESampler" and attrs["optuna_version"] == optuna.__version__
    assert attrs["sampler_settings"]["multivariate"] is True and attrs["sampler_seed"] == 2021
    assert attrs["budget"] == 9


def test_pruning_on_per_epoch_val_auc(tmp_path):
    def bad_then_good(cfg, *, on_epoch=None, **_):
        lr = float(cfg.train.learning_rate)
        for e in range(1, 4):
            on_epoch(epoch_log(e, 0.9 if lr > 1e-3 else 0.5 + 0.01 * e))
        return SimpleNamespace(run_id=None, metrics={"val_auc": 0.9 if lr > 1e-3 else 0.53,
                                                     "val_logloss": 0.5}, epochs=3)

    ov = overrides(tmp_path, "sweep.trials=12", "sweep.pruner.name=median", "sweep.pruner.median.n_startup_trials=2",
                   "sweep.pruner.median.n_warmup_steps=0")
    S.sweep(compose(ov), ov, train_fn=bad_then_good)
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(float(r["train.learning_rate"]) <= 1e-3 for r in pruned)
    assert all(int(r["epochs"]) < 3 for r in pruned)


def test_failed_trials_do_not_count_and_are_replaced(tmp_path):
    n = {"i": 0}

    def flaky(cfg, **kw):
        n["i"] += 1
        if n["i"] in (2, 3):
            raise RuntimeError("boom")
        return fake_train(cfg, **kw)

    ov = overrides(tmp_path, "sweep.trials=4")
    summary = S.sweep(compose(ov), ov, train_fn=flaky)
    assert summary["finished"] == 4 and summary["failed"] == 2
    states = [r["state"] for r in csv.DictReader((tmp_path / "sw" / "trials.csv").open())]
    assert states.count("failed") == 2 and states.count("complete") + states.count("pruned") == 4


def test_too_many_failures_stop_the_sweep(tmp_path):
    def broken(cfg, **kw):
        raise RuntimeError("always")

    ov = overrides(tmp_path, "sweep.trials=3", "sweep.max_failed=2")
    with pytest.raises(ST.SweepError, match="2 trials failed"):
        S.sweep(compose(ov), ov, train_fn=broken)
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))  # results written all the same
    assert [r["state"] for r in rows] == ["failed", "failed"]


def test_worker_needs_an_existing_study(tmp_path):
    ov = overrides(tmp_path, "sweep.role=worker")
    with pytest.raises(ST.SweepError, match="does not exist"):
        S.sweep(compose(ov), ov, train_fn=fake_train)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_running_trial_of_a_dead_worker_is_failed(tmp_path, monkeypatch):
    ov = overrides(tmp_path, "sweep.trials=2")
    cfg = compose(ov)
    storage = ST.open_storage(ST.storage_url(cfg))
    study = ST.create_study(cfg, storage, SP.load_search_space("dcn"))
    t = study.ask()
    host = __import__("socket").gethostname()
    t.set_user_attr(ST.WORKER_ATTR, f"{host}:{_dead_pid()}:0")
    alive = study.ask()
    alive.set_user_attr(ST.WORKER_ATTR, ST.worker_identity())
    monkeypatch.setattr(ST, "STALE_MIN_AGE", 0.0)
    assert ST.fail_stale_trials(study, retry=False) == [t.number]
    states = {x.number: x.state for x in study.get_trials()}
    assert states[t.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    # a young trial (just picked up; may still carry a dead identity) is left alone
    y = study.ask()
    y.set_user_attr(ST.WORKER_ATTR, f"{host}:{_dead_pid()}:0")
    monkeypatch.setattr(ST, "STALE_MIN_AGE", 60.0)
    assert ST.fail_stale_trials(study, retry=False) == []


def test_budget_race_loser_is_skipped_and_ignored(tmp_path):
    ov = overrides(tmp_path, "sweep.trials=1")
    cfg = compose(ov)
    storage = ST.open_storage(ST.storage_url(cfg))
    study = ST.create_study(cfg, storage, SP.load_search_space("dcn"))
    first = study.ask()  # another worker's trial, running
    second = study.ask()
    with pytest.raises(ST.OverBudget):
        ST.claim_or_skip(study, second, 1)
    ST.claim_or_skip(study, first, 1)  # the earlier trial keeps its claim
    study.tell(second, state=optuna.trial.TrialState.FAIL)
    study.tell(first, 0.7)
    assert ST.budget_state(study, 1).finished == 1 and ST.budget_state(study, 1).failed == 0
    _, rows = ST.trials_table(study)
    assert [r[0] for r in rows] == [first.number]


def test_worker_command_and_cpu_threads(tmp_path):
    cfg = compose(overrides(tmp_path, "sweep.workers=2"))
    assert S.default_threads(cfg, 2) == max(1, (os.cpu_count() or 1) // 2)
    cmd = S.worker_command(["model=dcn", "sweep.workers=2", "sweep.storage=x"], "journal:///a/b.journal", 1, 1)
    assert cmd[1:4] == ["-m", "bars.cli", "sweep"]
    assert "sweep.role=worker" in cmd and "sweep.worker_index=1" in cmd and "sweep.storage=/a/b.journal" in cmd
    assert "sweep.workers=2" not in cmd and "sweep.storage=x" not in cmd and "sweep.threads=1" in cmd


def test_progress_line(capsys):
    p = PR.Progress("plain", "w0", 8, stream=sys.stdout)
    p.best, p.finished = 0.81234, 2
    p._emit(p._line("(#2) complete"), True)
    out = capsys.readouterr().out
    assert "w0 trial 3/8 (#2) complete | best val_auc 0.81234 |" in out


def test_dashboard_points_at_the_same_storage(tmp_path):
    from bars.dashboard import dashboard

    ov = overrides(tmp_path, "sweep.trials=1")
    cfg = compose(ov)
    with pytest.raises(FileNotFoundError, match="run `make sweep"):
        dashboard(cfg, serve=False)
    S.sweep(cfg, ov, train_fn=fake_train)
    assert dashboard(cfg, serve=False).startswith("http://127.0.0.1:")


def test_final_reruns_best_with_protocol_seeds(tmp_path):
    from bars.final import run_final

    ov = overrides(tmp_path, "sweep.trials=3")
    S.sweep(compose(ov), ov, train_fn=fake_train)
    seen = []

    def record(cfg, **kw):
        seen.append((int(cfg.seed), float(cfg.train.learning_rate), int(cfg.train.max_epochs), kw["extra_tags"]))
        return SimpleNamespace(run_id=None, metrics={"val_auc": 0.8, "test_auc": 0.8})

    fov = [*ov, "final.seeds=3"]
    run_final(compose(fov), fov, train_fn=record)
    best = dict(o.split("=", 1) for o in (tmp_path / "sw" / "best.overrides").read_text().split())
    assert [s for s, *_ in seen] == [2021, 2022, 2023]
    assert all(abs(lr - float(best["train.learning_rate"])) < 1e-12 for _, lr, *_ in seen)
    assert all(t["stage"] == "final" for *_, t in seen) and seen[0][3]["final_index"] == 0
    assert seen[0][2] == 3  # the command's train.max_epochs, not the sweep cap


def test_launcher_time_budget(tmp_path):
    def slow(cfg, **kw):
        time.sleep(0.3)
        return fake_train(cfg, **kw)

    ov = overrides(tmp_path, "sweep.trials=50", "sweep.timeout=1")
    summary = S.sweep(compose(ov), ov, train_fn=slow)
    assert 1 <= summary["finished"] < 50


def test_changed_categorical_choices_fail_before_any_trial(tmp_path):
    d = tmp_path / "search"
    d.mkdir()
    (d / "dcn.yaml").write_text("model.params.dnn_hidden_units: [[64, 64], [128]]\n")
    ov = overrides(tmp_path, "sweep.trials=2", f"sweep.search_dir={d}")
    S.sweep(compose(ov), ov, train_fn=fake_train)
    (d / "dcn.yaml").write_text("model.params.dnn_hidden_units: [[64, 64], [256]]\n")
    calls = []
    ov2 = [*ov, "sweep.trials=3"]
    with pytest.raises(SP.SearchSpaceError, match="sweep.study=<new name>"):
        S.sweep(compose(ov2), ov2, train_fn=lambda *a, **k: calls.append(1))
    assert calls == []
    # float ranges may change within a study
    (d / "dcn.yaml").write_text("model.params.dnn_hidden_units: [[64, 64], [128]]\n"
                                "train.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n")
    assert S.sweep(compose(ov2), ov2, train_fn=fake_train)["finished"] == 3


def test_a_study_keeps_its_arithmetic(tmp_path):
    """A study's trials share train.precision and train.tf32: resuming an fp32 study with bf16 (or the other way),
    or joining it with a worker that asks for bf16, is refused before any trial, naming both settings; a new study
    name takes the other setting."""
    ov = overrides(tmp_path, "sweep.trials=2")
    S.sweep(compose(ov), ov, train_fn=fake_train)
    storage = ST.open_storage(ST.storage_url(compose(ov)))
    assert optuna.load_study(study_name="dcn__movielens_small", storage=storage).user_attrs["arithmetic"] == \
        {"precision": "fp32", "tf32": False}
    calls = []
    for extra in ("train.precision=bf16", "train.tf32=true"):
        ov2 = [*ov, "sweep.trials=3", extra]
        with pytest.raises(ST.SweepError, match=r"was run with train\.precision=fp32, train\.tf32=False; this sweep "
                                                r"asks for train\.precision=(bf16|fp32), train\.tf32=(False|True)"):
            S.sweep(compose(ov2), ov2, train_fn=lambda *a, **k: calls.append(1))
    assert calls == []
    with pytest.raises(ST.SweepError, match=r"asks for train\.precision=bf16"):  # a worker joining with bf16
        S.run_worker(compose([*ov, "train.precision=bf16"]), replay=[], train_fn=lambda *a, **k: calls.append(1),
                     tracking=False, progress_mode="off")
    assert calls == []
    ov3 = [*ov, "train.precision=bf16", "sweep.study=dcn_bf16"]
    assert S.sweep(compose(ov3), ov3, train_fn=fake_train)["finished"] == 2
    assert S.sweep(compose(ov3), ov3, train_fn=fake_train)["finished"] == 2  # resumed with its own setting
