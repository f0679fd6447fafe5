"""Sweep strategies selected by config: samplers (tpe, random, grid), pruners (median, sha, hyperband, none), the
checks on their settings, what a study records, and grid sweeps (a real one on tiny movielens_small data)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from bars import study as ST
from bars import sweep as S
from bars.config import compose
from bars.grids import GridError, apply_grid
from bars.samplers import UniqueSampler
from bars.strategy import strategy_problems
from bars.train import EpochLog

optuna.logging.set_verbosity(optuna.logging.WARNING)

GRID = {"axes": {"train.learning_rate": [0.001, 0.003], "model.params.dropout": [0.0, 0.2]},
        "set": {"train.embedding_regularizer": 0.001, "model.params.num_cross_layers": 2}, "points": 4}


def ov(tmp_path: Path, *extra: str) -> list[str]:
    return ["model=dcn", "data=movielens_small", f"sweep.dir={tmp_path / 'sw'}", "tracking.enabled=false",
            "sweep.progress=off", "train.max_epochs=4", "sweep.max_epochs=4", *extra]


def grid_file(tmp_path: Path, doc: dict | None = None) -> Path:
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump(doc or GRID))
    return p


def scripted(cfg, *, on_epoch=None, **_):
    """Per-epoch validation AUC from the learning rate: high rates are good from epoch 1 on, low ones never."""
    lr = float(cfg.train.learning_rate)
    good = lr > 1e-3
    best = 0.0
    for e in range(1, int(cfg.train.max_epochs) + 1):
        v = (0.9 if good else 0.5) + 0.001 * e
        best = max(best, v)
        on_epoch(EpochLog(epoch=e, train_loss=0.5, val={"auc": v, "logloss": 0.5}, monitor=v, lr=lr,
                          samples_per_s=1.0, seconds=0.0, improved=True, strikes=0))
    return SimpleNamespace(run_id=None, metrics={"val_auc": best, "val_logloss": 0.5}, epochs=e)


@pytest.mark.parametrize(("sampler", "cls"), [("tpe", optuna.samplers.TPESampler),
                                              ("random", optuna.samplers.RandomSampler),
                                              ("grid", ST.GridPointsSampler)])
@pytest.mark.parametrize(("pruner", "pcls"), [("median", optuna.pruners.MedianPruner),
                                              ("sha", optuna.pruners.SuccessiveHalvingPruner),
                                              ("hyperband", optuna.pruners.HyperbandPruner),
                                              ("none", optuna.pruners.NopPruner)])
def test_each_sampler_and_pruner_builds_and_is_recorded(tmp_path, sampler, cls, pruner, pcls):
    extra = [f"sweep.sampler.name={sampler}", f"sweep.pruner.name={pruner}"]
    if sampler == "grid":
        extra.append(f"sweep.grid={grid_file(tmp_path)}")
    cfg = apply_grid(compose(ov(tmp_path, *extra)), extra).cfg
    assert strategy_problems(cfg) == []
    made = ST.make_sampler(cfg, 7)
    if sampler != "grid":  # sweep.sampler.unique (default true) wraps TPE and random (bars.samplers)
        assert isinstance(made, UniqueSampler)
        made = made.base
    assert isinstance(made, cls) and isinstance(ST.make_pruner(cfg), pcls)
    rec = ST.study_record(cfg, S.space_of(cfg))
    assert rec["sampler"].endswith(cls.__name__) and rec["pruner"].endswith(pcls.__name__)
    if sampler == "tpe":
        assert rec["sampler_settings"] == {"n_startup_trials": 4, "n_ei_candidates": 24, "multivariate": True,
                                           "group": False, "constant_liar": True, "unique": True}
    if sampler == "grid":
        assert rec["grid"]["points"] == 4 and set(rec["search_space"]) == set(GRID["axes"])
    if pruner == "hyperband":  # max_resource defaults to the epoch cap
        assert rec["pruner_settings"] == {"min_resource": 1, "reduction_factor": 3, "max_resource": 4}
    if pruner == "sha":
        assert rec["pruner_settings"] == {"min_resource": 1, "reduction_factor": 3, "min_early_stopping_rate": 0}


def test_tpe_independent_and_grouped_settings_reach_the_sampler(tmp_path):
    cfg = compose(ov(tmp_path, "sweep.sampler.tpe.multivariate=false", "sweep.sampler.tpe.group=true",
                     "sweep.sampler.tpe.constant_liar=false", "sweep.sampler.tpe.n_startup_trials=2"))
    assert strategy_problems(cfg) == []
    assert ST.sampler_settings(cfg) == {"n_startup_trials": 2, "n_ei_candidates": 24, "multivariate": False,
                                        "group": True, "constant_liar": False, "unique": True}


@pytest.mark.parametrize(("extra", "words"), [
    (["sweep.sampler.name=bayes"], "sweep.sampler.name must be one of tpe | random | grid, got 'bayes'"),
    (["sweep.pruner.name=asha"], "sweep.pruner.name must be one of median | sha | hyperband | none"),
    (["sweep.pruner.hyperband.reduction_factor=2"],
     "sweep.pruner.hyperband.reduction_factor=2 is set but sweep.pruner.name=none: it would be ignored"),
    (["sweep.sampler.name=random", "sweep.sampler.tpe.n_startup_trials=9"],
     "sweep.sampler.tpe.n_startup_trials=9 is set but sweep.sampler.name=random"),
    (["sweep.pruner.name=sha", "sweep.pruner.sha.reduction_factor=1"],
     "sweep.pruner.sha.reduction_factor must be an integer >= 2, got 1"),
    (["sweep.pruner.name=sha", "sweep.pruner.sha.min_resource=0"], "sweep.pruner.sha.min_resource must be"),
    (["sweep.sampler.tpe.multivariate=1"], "sweep.sampler.tpe.multivariate must be true or false"),
    (["+sweep.pruner.reduction_factor=2"],
     ("sweep.pruner.reduction_factor: unknown key; sweep.pruner has name and the blocks ['median', 'sha', "
      "'hyperband'] (settings live in the name's block: sweep.pruner.sha.reduction_factor)")),
    (["+sweep.pruner.median.min_resource=2"], "sweep.pruner.median.min_resource: unknown setting"),
    (["sweep.pruner.name=hyperband", "sweep.pruner.hyperband.min_resource=6"],
     "sweep.pruner.hyperband.max_resource (4, or sweep.max_epochs when null) must be >= "),
    (["sweep.grid=bars"], "sweep.grid=bars only applies with sweep.sampler.name=grid (now tpe)"),
])
def test_bad_strategy_settings_name_the_key(tmp_path, extra, words):
    problems = strategy_problems(compose(ov(tmp_path, *extra)))
    assert any(words in p for p in problems), problems


def test_bad_settings_stop_the_sweep_before_anything_starts(tmp_path):
    from bars.validate import ConfigError

    o = ov(tmp_path, "sweep.pruner.name=sha", "sweep.pruner.median.n_warmup_steps=3")
    with pytest.raises(ConfigError, match="sweep.pruner.median.n_warmup_steps=3 is set but sweep.pruner.name=sha"):
        S.sweep(compose(o), o, train_fn=scripted)
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("pruner", ["sha", "hyperband"])
def test_sha_and_hyperband_prune_with_the_epoch_as_step(tmp_path, pruner):
    o = ov(tmp_path, "sweep.trials=16", f"sweep.pruner.name={pruner}", f"sweep.pruner.{pruner}.reduction_factor=2",
           "sweep.sampler.name=random")
    S.sweep(compose(o), o, train_fn=scripted)
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert len(rows) == 16
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned, rows
    assert all(float(r["train.learning_rate"]) <= 1e-3 for r in pruned)  # only the poor ones
    assert all(1 <= int(r["epochs"]) < 4 for r in pruned)  # stopped at an epoch rung, before the cap
    study = ST.load_study(compose(o), ST.open_storage(ST.storage_url(compose(o))), 0)
    assert study.user_attrs["pruner"] == ST.PRUNERS[pruner]


def test_grid_sweep_runs_exactly_its_points_for_real(tmp_path):
    """A real `bars sweep` (bars.run.train_one on tiny movielens_small) over a 2x2 user grid: 4 trials, each a
    different point, the set: keys in every trial and in best.overrides, then nothing more on a rerun."""
    g = grid_file(tmp_path)
    o = ["model=dcn", "data=movielens_small", "data.rows=2000", f"paths.data={tmp_path / 'data'}",
         f"sweep.dir={tmp_path / 'sw'}", "tracking.enabled=false", "sweep.progress=off", "train.max_epochs=1",
         "sweep.max_epochs=1", "train.batch_size=512", "train.eval_batch_size=4096", "sweep.threads=1",
         "model.params.dnn_hidden_units=[16]", "sweep.sampler.name=grid", f"sweep.grid={g}"]
    summary = S.sweep(compose(o), o)
    assert summary["finished"] == 4 and summary["budget"] == 4
    assert summary["grid"] == {"points": 4, "finished": 4, "repeated": 0, "missing": 0}
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 4
    got = {(float(r["train.learning_rate"]), float(r["model.params.dropout"])) for r in rows}
    assert got == {(a, b) for a in (0.001, 0.003) for b in (0.0, 0.2)}
    best = (tmp_path / "sw" / "best.overrides").read_text().split()
    assert "train.embedding_regularizer=0.001" in best and "model.params.num_cross_layers=2" in best
    study = ST.load_study(compose(o), ST.open_storage(ST.storage_url(compose(o))), 0)
    assert study.user_attrs["sampler"] == "bars.study.GridPointsSampler"
    assert sorted(t.user_attrs[ST.GRID_POINT_ATTR] for t in study.trials) == [0, 1, 2, 3]
    calls = []
    again = S.sweep(compose(o), o, train_fn=lambda *a, **k: calls.append(1))
    assert calls == [] and again["finished"] == 4


def test_partial_grid_and_too_many_trials(tmp_path, capsys):
    g = grid_file(tmp_path)
    o = ov(tmp_path, "sweep.sampler.name=grid", f"sweep.grid={g}", "sweep.trials=3")
    summary = S.sweep(compose(o), o, train_fn=scripted)
    assert summary["finished"] == 3 and summary["grid"]["missing"] == 1
    assert "PARTIAL grid: sweep.trials=3 of its 4 points" in capsys.readouterr().err
    o = ov(tmp_path, "sweep.sampler.name=grid", f"sweep.grid={g}", "sweep.trials=5")
    with pytest.raises(GridError, match="sweep.trials=5 is more than the 4 points"):
        S.sweep(compose(o), o, train_fn=scripted)


def test_explicit_point_list_is_replayed(tmp_path):
    doc = {"axes": {"train.learning_rate": [0.001, 0.003], "model.params.dropout": [0.0, 0.2]}, "product": False,
           "point_list": [{"train.learning_rate": 0.001, "model.params.dropout": 0.0},
                          {"train.learning_rate": 0.003, "model.params.dropout": 0.2}]}
    o = ov(tmp_path, "sweep.sampler.name=grid", f"sweep.grid={grid_file(tmp_path, doc)}")
    summary = S.sweep(compose(o), o, train_fn=scripted)
    assert summary["finished"] == 2
    rows = list(csv.DictReader((tmp_path / "sw" / "trials.csv").open()))
    assert {(float(r["train.learning_rate"]), float(r["model.params.dropout"])) for r in rows} == \
        {(0.001, 0.0), (0.003, 0.2)}


def test_grid_errors_name_the_key(tmp_path):
    bad = grid_file(tmp_path, {"axes": {"model.params.num_cros_layers": [1, 2]}})
    o = ov(tmp_path, "sweep.sampler.name=grid", f"sweep.grid={bad}")
    with pytest.raises(GridError, match=r"model.params.num_cros_layers \(nearest: \['model.params.num_cross_layers"):
        S.sweep(compose(o), o, train_fn=scripted)
    o = ov(tmp_path, "sweep.sampler.name=grid", "sweep.grid=bars")  # movielens_small has no BARS split
    with pytest.raises(GridError, match="sweep.grid_split"):
        S.sweep(compose(o), o, train_fn=scripted)
    o = ov(tmp_path, "sweep.sampler.name=grid")
    with pytest.raises(GridError, match="needs sweep.grid"):
        S.sweep(compose(o), o, train_fn=scripted)


def test_grid_points_are_claimed_once_and_exhaustion_skips(tmp_path):
    g = grid_file(tmp_path, {"axes": {"train.learning_rate": [0.001, 0.003]}})
    cfg = apply_grid(compose(ov(tmp_path, "sweep.sampler.name=grid", f"sweep.grid={g}")), []).cfg
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="g", direction="maximize")
    cfg.sweep.study = "g"
    study = ST.load_study(cfg, storage, 0)
    t0, t1, t2 = study.ask(), study.ask(), study.ask()
    a, b = ST.claim_grid_point(study, t0), ST.claim_grid_point(study, t1)
    assert {a, b} == {0, 1}
    with pytest.raises(ST.OverBudget):
        ST.claim_grid_point(study, t2)
    assert ST.SKIPPED_ATTR in t2.user_attrs
    study.tell(t0, state=optuna.trial.TrialState.FAIL)  # a failed trial frees its point
    t3 = study.ask()
    assert ST.claim_grid_point(study, t3) == a
    # the sampler answers from the claimed point
    assert t3.suggest_categorical("train.learning_rate", [0.001, 0.003]) == [0.001, 0.003][a]


def test_resume_warns_on_a_new_sampler_and_refuses_a_changed_grid(tmp_path, capsys):
    g = grid_file(tmp_path)
    o = ov(tmp_path, "sweep.trials=2", "sweep.sampler.name=random", "sweep.pruner.name=median")
    S.sweep(compose(o), o, train_fn=scripted)
    o2 = ov(tmp_path, "sweep.trials=3", "sweep.pruner.name=none")
    S.sweep(compose(o2), o2, train_fn=scripted)
    err = capsys.readouterr().err
    assert "was run with sampler optuna.samplers.RandomSampler" in err and "MedianPruner" in err
    o3 = ov(tmp_path, "sweep.sampler.name=grid", f"sweep.grid={g}")
    with pytest.raises(ST.SweepError, match="the grid cannot change"):
        S.sweep(compose(o3), o3, train_fn=scripted)


def test_grid_set_applies_under_the_command_line(tmp_path):
    g = grid_file(tmp_path)
    extra = ["sweep.sampler.name=grid", f"sweep.grid={g}", "model.params.num_cross_layers=5"]
    applied = apply_grid(compose(ov(tmp_path, *extra)), ov(tmp_path, *extra))
    assert applied.cfg.model.params.num_cross_layers == 5 and applied.kept == ["model.params.num_cross_layers"]
    assert applied.cfg.train.embedding_regularizer == 0.001
    assert applied.set_overrides == ["train.embedding_regularizer=0.001"]
    assert applied.cfg.sweep.trials == 4 and not applied.partial
    # borrowed split: movielens_small has no BARS split; frappe_x1's DCN grid (36 points) is taken
    o = ov(tmp_path, "sweep.sampler.name=grid", "sweep.grid=bars", "sweep.grid_split=frappe_x1")
    borrowed = apply_grid(compose(o), o)
    assert borrowed.grid is not None and borrowed.grid.meta["bars_split"] == "Frappe_x1"
    assert borrowed.cfg.sweep.trials == borrowed.grid.size == 36
