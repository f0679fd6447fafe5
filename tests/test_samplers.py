"""``sweep.sampler.unique``: TPE and random search that never repeat a point the study holds (bars.samplers), and a
finite search space whose points all have a finished trial ending the sweep (any sampler)."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from test_sweep_strategies import grid_file, ov, scripted

from bars import study as ST
from bars import sweep as S
from bars.config import compose
from bars.samplers import UniqueSampler, contains, space_exhausted, space_size
from bars.search import space_of
from bars.strategy import strategy_problems
from bars.study import distributions

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"a": [0.001, 0.003, 0.01], "b": [0, 1, 2, 3], "c": ["x", "y"]}  # 24 points


def objective(trial: optuna.Trial) -> float:
    a = trial.suggest_categorical("a", SPACE["a"])
    b = trial.suggest_categorical("b", SPACE["b"])
    c = trial.suggest_categorical("c", SPACE["c"])
    return -abs(a - 0.003) * 100 - abs(b - 2) - (c == "x") * 0.5  # one best point: (0.003, 2, "y")


def points(study: optuna.Study) -> list[tuple]:
    return [(t.params["a"], t.params["b"], t.params["c"]) for t in study.trials]


@pytest.mark.parametrize("base", ["random", "tpe"])
def test_a_unique_sampler_visits_every_point_of_a_finite_space_once(base):
    def make(seed: int) -> optuna.samplers.BaseSampler:
        if base == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)

    plain = optuna.create_study(direction="maximize", sampler=make(3))
    plain.optimize(objective, n_trials=24)
    assert len(set(points(plain))) < 24  # with replacement: repeats (the study's finding on BARS grids)
    unique = optuna.create_study(direction="maximize", sampler=UniqueSampler(make(3), seed=3))
    unique.optimize(objective, n_trials=24)
    assert len(set(points(unique))) == 24  # every point once: the best one included
    assert unique.best_value == pytest.approx(0.0)
    space = {k: CategoricalDistribution(v) for k, v in SPACE.items()}
    assert space_exhausted(unique.trials, space) and not space_exhausted(unique.trials[:-1], space)


@pytest.mark.parametrize("base", ["random", "tpe"])
def test_on_a_space_with_a_continuous_dimension_the_wrapper_changes_nothing(base):
    def obj(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        layers = trial.suggest_int("layers", 1, 3)
        return -abs(lr - 1e-3) - layers * 0.01

    def make() -> optuna.samplers.BaseSampler:
        if base == "random":
            return optuna.samplers.RandomSampler(seed=5)
        return optuna.samplers.TPESampler(seed=5, n_startup_trials=4, multivariate=True, constant_liar=True)

    runs = []
    for sampler in (make(), UniqueSampler(make(), seed=5)):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(obj, n_trials=14)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_tpe_keeps_its_own_choice_when_it_is_new_and_falls_back_only_on_a_repeat():
    sampler = UniqueSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=4, multivariate=True), seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=12)
    assert len(set(points(study))) == 12
    assert sampler.fallbacks < 12 - 4  # most post-startup points are TPE's own
    # same seed, same trials: deterministic
    again = optuna.create_study(direction="maximize", sampler=UniqueSampler(
        optuna.samplers.TPESampler(seed=0, n_startup_trials=4, multivariate=True), seed=0))
    again.optimize(objective, n_trials=12)
    assert points(again) == points(study)


def test_a_running_trials_point_is_not_given_to_another_worker():
    study = optuna.create_study(direction="maximize", sampler=UniqueSampler(optuna.samplers.RandomSampler(seed=1),
                                                                            seed=1))
    study.optimize(objective, n_trials=20)
    held = study.ask()  # a worker holds this trial (RUNNING) and has chosen its point
    for k, v in SPACE.items():
        held.suggest_categorical(k, v)
    mine = (held.params["a"], held.params["b"], held.params["c"])
    taken = set(points(study)[:20]) | {mine}
    rest = []
    for _ in range(24 - len(taken)):
        t = study.ask()
        p = tuple(t.suggest_categorical(k, v) for k, v in SPACE.items())
        rest.append(p)
        study.tell(t, 0.0)
    assert not set(rest) & taken and len(set(rest)) == len(rest)


def test_space_size_counts_finite_spaces_and_continuous_ones_are_infinite(tmp_path):
    assert space_size({"a": CategoricalDistribution([1, 2, 3]), "b": IntDistribution(1, 6),
                       "c": FloatDistribution(0.0, 0.5, step=0.1)}) == 3 * 6 * 6
    assert space_size({"a": FloatDistribution(1e-4, 1e-2, log=True)}) is None
    cfg = compose(ov(tmp_path))
    assert space_size(distributions(space_of(cfg))) is None  # conf/search/dcn: continuous lr and regularizer
    d = finite_space(tmp_path)
    assert space_size(distributions(space_of(compose(ov(tmp_path, f"sweep.search_dir={d}"))))) == 2 * 3 * 2


def finite_space(tmp_path: Path) -> Path:
    d = tmp_path / "search"
    d.mkdir(exist_ok=True)
    (d / "common.yaml").write_text("train.learning_rate: [0.001, 0.003]\nmodel.params.dropout: {type: float, "
                                   "low: 0.0, high: 0.2, step: 0.1}\n")
    (d / "dcn.yaml").write_text("model.params.num_cross_layers: {type: int, low: 1, high: 2}\n")
    return d


@pytest.mark.parametrize("unique", [True, False])
def test_a_sweep_ends_when_every_point_of_its_finite_space_has_run(tmp_path, unique, capfd):
    """12 points, a budget of 1M samples the scripted trials never spend, a cap of 60 trials: the sweep stops as
    soon as every point has a finished trial: after exactly 12 trials with unique=true."""
    extra = [f"sweep.search_dir={finite_space(tmp_path)}", "sweep.sampler.name=random", "sweep.trials=60",
             "sweep.budget=1M samples", f"sweep.sampler.unique={str(unique).lower()}"]
    cfg = compose(ov(tmp_path, *extra))
    assert strategy_problems(cfg) == []
    out = S.sweep(cfg, extra, train_fn=scripted)
    assert out["done"] and out["exhausted"]
    with (tmp_path / "sw" / "trials.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "complete"]
    pts = {(r["train.learning_rate"], r["model.params.dropout"], r["model.params.num_cross_layers"]) for r in rows}
    assert len(pts) == 12
    if unique:
        assert len(rows) == 12
    else:
        assert 12 <= len(rows) < 60
    assert "the search space is exhausted: all 12 of its points have a finished trial" in capfd.readouterr().err
    storage = ST.open_storage(ST.storage_url(cfg), cfg)
    study = ST.load_study(cfg, storage, 0)
    assert study.user_attrs["space_points"] == 12
    assert study.user_attrs["sampler_settings"]["unique"] is unique
    assert isinstance(study.sampler, UniqueSampler) is unique


def test_unique_is_checked(tmp_path):
    assert any("sweep.sampler.unique must be true or false" in p
               for p in strategy_problems(compose(ov(tmp_path, "sweep.sampler.unique=maybe"))))
    assert strategy_problems(compose(ov(tmp_path, "sweep.sampler.unique=false"))) == []
    grid = ["sweep.sampler.name=grid", f"sweep.grid={grid_file(tmp_path)}"]
    assert strategy_problems(compose(ov(tmp_path, *grid))) == []  # a grid never repeats: unique holds
    assert any("sweep.sampler.unique=false has no effect with sweep.sampler.name=grid" in p
               for p in strategy_problems(compose(ov(tmp_path, *grid, "sweep.sampler.unique=false"))))


def test_parallel_workers_never_get_the_same_point_even_before_a_trial_finishes():
    """Four workers asking at once on a 4-point space (nothing finished yet): four different points."""
    space = {"a": [1, 2], "b": ["x", "y"]}
    study = optuna.create_study(sampler=UniqueSampler(optuna.samplers.RandomSampler(seed=0), seed=0))
    held = []
    for _ in range(4):
        t = study.ask()
        held.append(tuple(t.suggest_categorical(k, v) for k, v in space.items()))
    assert len(set(held)) == 4


def test_a_stepped_float_is_one_point_whatever_its_rounding():
    """0.3 and 0.30000000000000004 are the same point of [0, 0.7] step 0.1: eight trials cover all eight points,
    and the space is exhausted only then."""
    def obj(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 0.7, step=0.1)

    study = optuna.create_study(sampler=UniqueSampler(optuna.samplers.TPESampler(seed=2, n_startup_trials=2),
                                                      seed=2))
    study.optimize(obj, n_trials=8)
    assert sorted(round(t.params["x"] * 10) for t in study.trials) == list(range(8))
    x = {"x": FloatDistribution(0.0, 0.7, step=0.1)}
    assert space_exhausted(study.trials, x) and not space_exhausted(study.trials[:7], x)


def test_contains_knows_the_points_of_each_kind_of_dimension():
    assert contains(CategoricalDistribution(["[1,2]", "x"]), "[1,2]") and not contains(CategoricalDistribution(["x"]),
                                                                                      "y")
    assert contains(IntDistribution(1, 9, step=2), 5) and not contains(IntDistribution(1, 9, step=2), 4)
    assert not contains(IntDistribution(1, 9), 10) and not contains(IntDistribution(1, 9), 2.5)
    f = FloatDistribution(0.0, 0.5, step=0.1)
    assert contains(f, 0.30000000000000004) and contains(f, 0.5)
    assert not contains(f, 0.35) and not contains(f, 0.6) and not contains(f, -0.1)
    assert not contains(FloatDistribution(0.0, 1.0), 0.5)  # continuous: no points to hold


def test_a_resumed_study_whose_space_shrank_counts_only_the_points_of_its_space_now(tmp_path, capfd):
    """A finite space of 12 points, 6 trials; then resumed on a space of 4 points (one dimension's range cut,
    another dimension dropped): the old trials outside it do not count toward exhaustion, and the sweep ends
    once every one of the 4 points has a finished trial."""
    d = finite_space(tmp_path)
    first = [f"sweep.search_dir={d}", "sweep.sampler.name=random", "sweep.trials=6", "sweep.budget=1M samples"]
    S.sweep(compose(ov(tmp_path, *first)), first, train_fn=scripted)
    cfg = compose(ov(tmp_path, *first))
    study = ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), 0)
    old = [t.params for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({tuple(sorted(p.items())) for p in old}) == 6
    (d / "common.yaml").write_text("train.learning_rate: [0.001, 0.003]\n")  # dropout no longer searched
    (d / "dcn.yaml").write_text("model.params.num_cross_layers: {type: int, low: 1, high: 2}\n")
    smaller = [*first[:2], "sweep.trials=60", first[3]]
    cfg = compose(ov(tmp_path, *smaller))
    state = ST.budget_state(ST.create_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), space_of(cfg)), None)
    held = {(p["train.learning_rate"], p["model.params.num_cross_layers"]) for p in old}
    assert state.exhausted is (len(held) == 4)  # the 6 old points (12-point space) are at most 4 points now
    (d / "dcn.yaml").write_text("model.params.num_cross_layers: {type: int, low: 3, high: 4}\n")  # a range moved
    cfg = compose(ov(tmp_path, *smaller))
    study = ST.create_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), space_of(cfg))
    assert study.user_attrs["space_points"] == 4
    assert not ST.budget_state(study, None).exhausted  # the old trials (1..2 cross layers) hold none of its points
    out = S.sweep(cfg, smaller, train_fn=scripted)
    assert out["done"] and out["exhausted"]
    study = ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), 0)
    new = [t.params for t in study.get_trials()[len(old):] if t.state == optuna.trial.TrialState.COMPLETE]
    assert {(p["train.learning_rate"], p["model.params.num_cross_layers"]) for p in new} == \
        {(a, b) for a in (0.001, 0.003) for b in (3, 4)}
    # the unique sampler compared points on the space now (both dimensions), not on the one dimension the old and
    # new trials share (the learning rate, whose two values the old trials hold): no repeat, 4 trials for 4 points
    assert len(new) == 4
