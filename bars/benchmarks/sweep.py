"""`bars bench sweep` (`make bench-sweep`): which sweep strategy spends a tuning budget best?

The study of issue 15: for each dataset x model, BARS's grid for the model (the reference: its full compute is
the budget unit) against random search, TPE (multivariate), TPE + median pruning (`bars sweep`'s default before this study) and
TPE + Hyperband, each run with several sampler seeds until it has spent the grid's compute (training samples
processed and process CPU-seconds; ``--fraction`` of it when time forces it). Every strategy is the product's:
the config composed with its ``sweep.sampler.name`` / ``sweep.pruner.name`` (:data:`STRATEGY_OVERRIDES`) and
built by ``bars.study.make_sampler`` / ``make_pruner``; the grids are ``bars.grids.load_grid``'s BARS Frappe_x1
grids (DNN's is borrowed: :data:`BORROWED_GRIDS`), walked in a grid sweep's order. Trials are capped at
``--epochs`` epochs (the sweep's ``sweep.max_epochs``) and trained in-process through ``bars.run.train_one``
(tracking off).

``--space`` is what random and TPE search: ``grid`` (default) the grid's own points, each axis a categorical of
its values (an explicit point list: one categorical over the point index), with the grid's ``set:`` applied, so
every strategy searches the points the grid walks and each trial costs what that point costs (it is replayed
from the trained point: per-epoch AUCs to the pruner, the point's samples and CPU-seconds); ``search`` the
model's ``conf/search`` space (what ``bars sweep`` searches by default), every trial trained.

Every (data, model, strategy, seed) cell is one JSON file under ``<out>/cells/`` written atomically when the cell
ends, so a killed study continues where it stopped (the grid also keeps its trained points as it goes). The
report (``--report-only``) reads whatever cells exist: a markdown table and plots (``bars.benchmarks.sweep_report``).

The grid is trained once per (data, model) with the protocol's training seed (as ``bars sweep`` trains every trial
with ``seed``): a grid "seed" is the order a grid sweep with ``sweep.seed=<seed>`` walks the points, replayed
on the trained points (training is deterministic for a configuration, so training a point twice gives the same
result). ``--overhead`` measures a sweep trial's fixed cost through the real ``bars sweep`` path (issue 16).

    bars bench sweep [--data frappe_vt,movielens_small,synthetic] [--models dcn,finalmlp,dnn,autoint_plus]
                     [--strategies grid,random,tpe,tpe_median,tpe_hyperband,random_unique,tpe_unique] [--seeds 3] [--out .bench/sweep]
                     [--space grid|search] [--threads 1] [--epochs 3] [--rows 20000] [--fraction 1]
                     [--report-only] [--overhead]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig

from bars import grids
from bars.config import PROJECT_ROOT, compose
from bars.fileio import atomic_write_text
from bars.grids import Grid
from bars.search import decode_choice, encode_choice

DATASETS = ("frappe_vt", "movielens_small", "synthetic")
MODELS = ("dcn", "finalmlp", "dnn", "autoint_plus")
STRATEGIES = ("grid", "random", "tpe", "tpe_median", "tpe_hyperband", "random_unique", "tpe_unique")
STRATEGY_NAMES = {"grid": "BARS grid", "random": "random", "tpe": "TPE, no pruning (second default)",
                  "tpe_median": "TPE + median pruning (first default)", "tpe_hyperband": "TPE + Hyperband",
                  "random_unique": "random, no repeats", "tpe_unique": "TPE, no repeats (default)"}
# The product's sampler/pruner keys of each strategy (conf/sweep/default.yaml `sweep.sampler.name` /
# `sweep.pruner.name` / `sweep.sampler.unique`); TPE's own settings (startup trials, multivariate, ...) stay the
# sweep defaults. The strategies measured before `unique` existed sample with replacement (unique=false).
_REPEATS = "sweep.sampler.unique=false"
STRATEGY_OVERRIDES = {
    "grid": ["sweep.sampler.name=grid", "sweep.pruner.name=none"],
    "random": ["sweep.sampler.name=random", "sweep.pruner.name=none", _REPEATS],
    "tpe": ["sweep.sampler.name=tpe", "sweep.pruner.name=none", _REPEATS],
    "tpe_median": ["sweep.sampler.name=tpe", "sweep.pruner.name=median", _REPEATS],
    "tpe_hyperband": ["sweep.sampler.name=tpe", "sweep.pruner.name=hyperband", _REPEATS],
    # sweep.sampler.unique (bars.samplers.UniqueSampler): never a point another trial of the run holds
    "random_unique": ["sweep.sampler.name=random", "sweep.pruner.name=none", "sweep.sampler.unique=true"],
    "tpe_unique": ["sweep.sampler.name=tpe", "sweep.pruner.name=none", "sweep.sampler.unique=true"],
}
FRACTIONS = (1 / 9, 1 / 3, 2 / 3, 1.0)
FRACTION_LABELS = ("1/9", "1/3", "2/3", "1")


# --------------------------------------------------------------------------------------------------------------
# BARS's Frappe_x1 grids (tuner configs of reczoo/BARS at the presets' commit), on this project's config keys.
# `set` = what BARS used at every grid point (the model's conf/presets/bars/frappe_x1 values; embedding size,
# epochs and seed stay the dataset's protocol and the study's epoch cap); `axes` = the keys BARS varied.
# --------------------------------------------------------------------------------------------------------------
_EMB = "train.embedding_regularizer"
# DNN has no BARS grid on Frappe_x1 (BARS published its one best point): the study borrows DCN's dropout x
# embedding-regularizer axes on the same split, on DNN's Frappe_x1 preset (the harness's own grid).
BORROWED_GRIDS: dict[str, tuple[dict[str, list[Any]], str, str]] = {
    "dnn": ({"model.params.dropout": [0.2, 0.3, 0.4], _EMB: [0.005, 0.01, 0.05, 0.1, 0.2, 0.5]},
            "DCN_frappe_x1_tuner_config_02's dropout x embedding-regularizer axes on DNN's Frappe_x1 preset",
            ("BARS published only its best DNN point for Frappe_x1 (DNN_frappe_x1_tuner_config_02 has 1 expid): "
             "the study uses the 18-point dropout x regularizer grid BARS ran for DCN on the same split")),
}
# grid `set:` keys the study does not apply: the embedding size and seed stay the dataset's protocol, the epochs
# the study's cap (--epochs)
_NOT_SET = ("model.params.embedding_dim", "train.max_epochs", "seed")


def load_study_grid(model: str) -> Grid:
    """BARS's Frappe_x1 grid of ``model`` (``bars.grids.load_grid``: conf/grids/bars/frappe_x1/<model>.yaml),
    replayed on every dataset of the study; DNN's is :data:`BORROWED_GRIDS`'s. The grid's ``set:`` minus
    :data:`_NOT_SET` is applied to every trial of every strategy."""
    if model in BORROWED_GRIDS:
        axes, source, note = BORROWED_GRIDS[model]
        preset = yaml.safe_load((PROJECT_ROOT / "conf" / "presets" / "bars" / "frappe_x1" / f"{model}.yaml"
                                 ).read_text())
        fixed = {k: v for k, v in preset["set"].items() if k not in axes}
        doc = {"axes": axes, "set": fixed, "source": f"reczoo/BARS@{preset['bars_commit'][:10]}:{source}",
               "note": note}
        where = f"the study's borrowed grid for {model}"
    else:
        try:
            g = grids.load_grid(model, split="frappe_x1")
        except grids.GridError as e:
            raise SystemExit(f"bars bench sweep: {e}") from e
        doc = {"axes": g.axes, "set": g.set, "product": g.product, "source": f"conf/grids/bars/frappe_x1/{model}.yaml "
               f"({g.size} points{'' if g.product else ', an explicit point list'}; "
               f"{g.meta.get('source', '')})", "note": str(g.meta.get("note", "") or "")}
        if not g.product:
            doc["point_list"] = g.points
        where = str(g.path)
    doc["set"] = {k: v for k, v in doc["set"].items() if k not in _NOT_SET}
    return grids.parse_grid(doc, where)


# Frappe_x1's field names in the grids' values (FinalMLP's feature-selection contexts: fs1 on `user`, fs2 on
# `item`) -> the field playing that role on the other datasets (synthetic: its first two categorical fields).
FIELD_MAP: dict[str, dict[str, str]] = {"movielens_small": {"item": "movie"},
                                        "synthetic": {"user": "C1", "item": "C2"}}


def for_data(g: Grid, data: str) -> Grid:
    """``g`` with Frappe field names in context values (keys ending in ``_context``) renamed for ``data``."""
    names = FIELD_MAP.get(data)
    if not names:
        return g

    def fix(k: str, v: Any) -> Any:
        if k.endswith("_context") and isinstance(v, list):
            return [names.get(x, x) if isinstance(x, str) else x for x in v]
        return v

    doc = grid_doc(g)
    doc["axes"] = {k: [fix(k, v) for v in vals] for k, vals in g.axes.items()}
    doc["set"] = {k: fix(k, v) for k, v in g.set.items()}
    if not g.product:
        doc["point_list"] = [{k: fix(k, v) for k, v in p.items()} for p in g.points]
    if any(doc[part] != grid_doc(g)[part] for part in ("axes", "set")):
        doc["note"] = (str(doc.get("note") or "") + f"; Frappe fields renamed for {data}: "
                       + ", ".join(f"{a}->{b}" for a, b in names.items())).lstrip("; ")
    return grids.parse_grid(doc, f"{g.path or 'the grid'} (fields of {data})")


def grid_doc(g: Grid) -> dict[str, Any]:
    d: dict[str, Any] = {"axes": g.axes, "set": g.set, "product": g.product, **g.meta}
    if not g.product:
        d["point_list"] = g.points
    return d


def study_grid(out: Path, data: str, model: str) -> Grid:
    """The grid a study uses for (data, model): fixed in ``<out>/cells/<data>/<model>/grid/grid.json`` on first
    use, so a continued study replays the same points whatever grids the checkout has since (a grid.json of the
    first study's format, ``{model, axes, set, source, note}``, reads as the product of its axes)."""
    path = cell_dir(out, data, model, "grid") / "grid.json"
    if path.exists():
        doc = json.loads(path.read_text())
        doc.pop("model", None)
        return grids.parse_grid(doc, str(path))
    g = for_data(load_study_grid(model), data)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(grid_doc(g), indent=1))
    return g


def grid_source(g: Grid) -> str:
    return str(g.meta.get("source", ""))


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


# --------------------------------------------------------------------------------------------------------------
# Samplers and pruners: the product's factories (``bars.study.make_sampler`` / ``make_pruner``) on the config
# composed with the strategy's ``sweep.sampler.name`` / ``sweep.pruner.name``
# --------------------------------------------------------------------------------------------------------------
def strategy_cfg(base: list[str], strategy: str, seed: int) -> DictConfig:
    return compose([*base, *STRATEGY_OVERRIDES[strategy], f"sweep.seed={seed}"])


def make_strategy(cfg: DictConfig, seed: int) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    from bars import study as S

    return S.make_sampler(cfg, seed), S.make_pruner(cfg)


def grid_order(grid: Grid, seed: int) -> list[int]:
    """The order a grid sweep (``sweep.sampler.name=grid``, ``sweep.seed=seed``) walks the grid's points: the
    product's :class:`bars.study.GridPointsSampler` permutation."""
    from bars.study import GridPointsSampler

    return list(GridPointsSampler(grid, seed).order)


def grid_space_suggest(grid: Grid) -> Callable[[optuna.Trial], dict[str, Any]]:
    """``--space grid``: a trial's point of the grid. A product grid: each axis one categorical of its values
    (lists as their JSON text); an explicit point list: one categorical over the point index (``grid_point``)."""
    if grid.product:
        def suggest(trial: optuna.Trial) -> dict[str, Any]:
            return {k: decode_choice(trial.suggest_categorical(k, [encode_choice(v) for v in vals]))
                    for k, vals in grid.axes.items()}
    else:
        def suggest(trial: optuna.Trial) -> dict[str, Any]:
            return dict(grid.points[int(trial.suggest_categorical("grid_point", list(range(grid.size))))])
    return suggest


# --------------------------------------------------------------------------------------------------------------
# One trial, one cell
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Setting:
    data: str
    model: str
    base: list[str]  # overrides of every trial of (data, model)
    train_rows: int = 0
    epochs: int = 3


def data_overrides(data: str, args: argparse.Namespace) -> list[str]:
    out = [f"data={data}"]
    if data == "frappe_vt" and args.frappe_raw:
        out.append(f"data.raw_dir={args.frappe_raw}")
    if data == "synthetic":
        out.append(f"data.rows={args.synthetic_rows}")
    elif args.rows:
        out.append(f"data.rows={args.rows}")
    return out


def base_overrides(data: str, model: str, args: argparse.Namespace, out: Path) -> list[str]:
    return [f"model={model}", *data_overrides(data, args), "tracking.enabled=false",
            f"train.num_threads={args.threads}", f"sweep.max_epochs={args.epochs}",
            f"paths.checkpoints={out / 'checkpoints'}", *( [f"paths.data={args.data_dir}"] if args.data_dir else [])]


def train_trial(tcfg: DictConfig, rows: int, on_epoch: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train one configuration; returns its record (pruning propagates as optuna.TrialPruned after the record
    is filled in ``on_epoch``'s ``seen``)."""
    from bars.run import train_one

    c0, t0 = time.process_time(), time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        r = train_one(tcfg, on_epoch=on_epoch, quiet=True)
    return {"state": "complete", "epochs": int(r.epochs), "samples": int(r.epochs) * rows,
            "cpu_s": round(time.process_time() - c0, 3), "wall_s": round(time.monotonic() - t0, 3),
            "val_aucs": [round(float(e.val_auc), 6) for e in r.history],
            "val_auc": float(r.metrics["val_auc"]), "test_auc": float(r.metrics["test_auc"])}


def trial_cfg(cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
    from bars.sweep import trial_config

    return trial_config(cfg, params, None)


def run_grid_points(s: Setting, grid: Grid, out: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train every grid point once, with the grid's ``set:`` applied (resumable: ``points.json``, keyed by the
    point's JSON, is rewritten after each point)."""
    path = cell_dir(out, s.data, s.model, "grid") / "points.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    cfg = compose([*s.base, *[f"{k}={_hydra(v)}" for k, v in grid.set.items()]])
    for params in grid.points:
        key = _key(params)
        if key in done:
            continue
        rec = train_trial(trial_cfg(cfg, params), s.train_rows)
        done[key] = {"params": params, **rec}
        atomic_write_text(path, json.dumps(done, indent=1))
        log(f"    grid point {len(done)}/{grid.size}: val {rec['val_auc']:.5f} test {rec['test_auc']:.5f} "
            f"{rec['epochs']} ep {rec['cpu_s']:.1f} CPU-s")
    return [done[_key(p)] for p in grid.points]


def _hydra(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, bool)) or v is None else str(v)


def grid_cell(grid: Grid, seed: int, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid's trials in the order a grid sweep with ``sweep.seed=seed`` walks them (:func:`grid_order`),
    replayed on the trained points (``points`` in ``grid.points`` order)."""
    return [{"number": i, **points[idx]} for i, idx in enumerate(grid_order(grid, seed))]


def replay_trial(trial: optuna.Trial, rec: dict[str, Any], last: int) -> dict[str, Any]:
    """``--space grid``: the trial of a grid point, replayed from its trained record: its per-epoch validation
    AUCs are reported to the pruner epoch by epoch (as ``bars sweep`` does), so a pruned trial stops where it
    would; it costs the point's recorded samples and CPU-seconds (pruned: the epochs it ran, CPU pro rata).
    Training is deterministic for a configuration (same seed, 1 thread): replaying equals retraining
    (tests/test_bench_sweep.py checks it)."""
    vals = [float(v) for v in rec["val_aucs"]]
    for i, v in enumerate(vals, start=1):
        trial.report(v, step=i)
        if i < last and i < len(vals) and trial.should_prune():
            share = i / len(vals)
            return {"state": "pruned", "epochs": i, "samples": round(rec["samples"] * share),
                    "cpu_s": round(rec["cpu_s"] * share, 3), "wall_s": round(rec.get("wall_s", 0.0) * share, 3),
                    "val_aucs": rec["val_aucs"][:i], "val_auc": max(vals[:i]), "test_auc": None}
        if i < last and i == len(vals) and trial.should_prune():
            # the last epoch the point trained (it stopped early): pruning then saves nothing, the trial is pruned
            return {**{k: rec[k] for k in ("epochs", "samples", "cpu_s", "val_aucs")}, "state": "pruned",
                    "wall_s": rec.get("wall_s", 0.0), "val_auc": max(vals), "test_auc": None}
    return {k: rec[k] for k in ("state", "epochs", "samples", "cpu_s", "wall_s", "val_aucs", "val_auc", "test_auc")
            if k in rec}


def strategy_cell(s: Setting, strategy: str, seed: int, budget: dict[str, float], fraction: float,
                  space: str = "search", grid: Grid | None = None,
                  points: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One strategy run: trials until its samples or its CPU-seconds reach ``fraction`` of the grid's (the
    trial that crosses the line finishes: the overshoot is recorded). ``space="search"``: the model's
    ``conf/search`` space, every trial trained; ``space="grid"``: the grid's points (:func:`grid_space_suggest`,
    the grid's ``set:`` applied), every trial replayed from the trained point (:func:`replay_trial`)."""
    from bars.search import space_of

    cfg = strategy_cfg(s.base, strategy, seed)
    if space == "grid":
        assert grid is not None and points is not None
        by_key = {_key(p): rec for p, rec in zip(grid.points, points, strict=True)}
        suggest = grid_space_suggest(grid)
        cfg = compose([*s.base, *STRATEGY_OVERRIDES[strategy], f"sweep.seed={seed}",
                       *[f"{k}={_hydra(v)}" for k, v in grid.set.items()]])
    else:
        params_space = space_of(cfg)

        def suggest(trial: optuna.Trial) -> dict[str, Any]:
            return {k: p.suggest(trial) for k, p in params_space.items()}
    sampler, pruner = make_strategy(cfg, seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    trials: list[dict[str, Any]] = []
    spent = {"samples": 0.0, "cpu_s": 0.0}
    target = {k: fraction * budget[k] for k in spent}

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        tcfg = trial_cfg(cfg, params)
        last = int(tcfg.train.max_epochs)
        if space == "grid":
            rec = replay_trial(trial, by_key[_key(params)], last)
        else:
            rec = _train_pruned(trial, tcfg, s.train_rows, last)
        trials.append({"number": trial.number, "params": params, **rec})
        spent["samples"] += rec["samples"]
        spent["cpu_s"] += rec["cpu_s"]
        if spent["samples"] >= target["samples"] or spent["cpu_s"] >= target["cpu_s"]:  # either budget: spent
            study.stop()
        if rec["state"] == "pruned":
            raise optuna.TrialPruned()
        return rec["val_auc"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=10_000)
    return trials


def _train_pruned(trial: optuna.Trial, tcfg: DictConfig, rows: int, last: int) -> dict[str, Any]:
    """Train a trial, reporting every epoch's validation AUC to the pruner (``bars sweep``'s objective)."""
    seen: dict[str, Any] = {"vals": []}
    c0, t0 = time.process_time(), time.monotonic()

    def on_epoch(ep: Any) -> None:
        seen["vals"].append(round(float(ep.val_auc), 6))
        trial.report(float(ep.val_auc), step=int(ep.epoch))
        if int(ep.epoch) < last and trial.should_prune():
            raise optuna.TrialPruned()

    try:
        return train_trial(tcfg, rows, on_epoch)
    except optuna.TrialPruned:
        n = len(seen["vals"])
        return {"state": "pruned", "epochs": n, "samples": n * rows,
                "cpu_s": round(time.process_time() - c0, 3), "wall_s": round(time.monotonic() - t0, 3),
                "val_aucs": seen["vals"], "val_auc": max(seen["vals"]), "test_auc": None}


def cell_dir(out: Path, data: str, model: str, strategy: str) -> Path:
    return out / "cells" / data / model / strategy


def cell_path(out: Path, data: str, model: str, strategy: str, seed: int) -> Path:
    return cell_dir(out, data, model, strategy) / f"seed{seed}.json"


def write_cell(path: Path, meta: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**meta, "trials": trials}, indent=1))


def train_rows_of(cfg: DictConfig) -> int:
    from bars.data.prepare import prepare

    with contextlib.redirect_stdout(io.StringIO()):
        d = prepare(cfg, quiet=True)
    return int(json.loads((d / "manifest.json").read_text())["splits"]["train"]["rows"])


def run_study(args: argparse.Namespace, out: Path) -> None:
    log = _logger(args)
    datas, models, strategies = _split(args.data), _split(args.models), _split(args.strategies)
    t_start = time.monotonic()
    estimate_done = False
    # model by model (in --models order) on the real datasets, then every model on the synthetic data
    order = [(d, m) for m in models for d in datas if d != "synthetic"] + \
        [("synthetic", m) for m in models if "synthetic" in datas]
    for data, model in order:
        s = Setting(data, model, base_overrides(data, model, args, out), epochs=args.epochs)
        cfg0 = compose(s.base)
        s.train_rows = train_rows_of(cfg0)
        grid = study_grid(out, data, model)
        log(f"== {data} x {model}: {s.train_rows:,} train rows, grid {grid.size} points "
            f"({grid_source(grid)}), epoch cap {args.epochs}, space {args.space}")
        t0, c0 = time.monotonic(), time.process_time()
        points = run_grid_points(s, grid, out, log)
        budget = {"samples": float(sum(p["samples"] for p in points)),
                  "cpu_s": float(sum(p["cpu_s"] for p in points))}
        if not estimate_done:
            _print_estimate(args, datas, models, strategies, s, grid, budget, log)
            estimate_done = True
        meta = {"data": data, "model": model, "train_rows": s.train_rows, "epochs_cap": args.epochs,
                "grid_points": grid.size, "grid_source": grid_source(grid), "grid_note": grid.meta.get("note", ""),
                "grid_budget": budget, "fraction": args.fraction, "space": args.space, "overrides": s.base}
        for seed in range(args.seeds):
            for strategy in strategies:
                path = cell_path(out, data, model, strategy, seed)
                if path.exists():
                    continue
                t1, c1 = time.monotonic(), time.process_time()
                if strategy == "grid":
                    trials = grid_cell(grid, seed, points)
                else:
                    trials = strategy_cell(s, strategy, seed, budget, args.fraction, args.space, grid, points)
                write_cell(path, {**meta, "strategy": strategy, "seed": seed,
                                  "seconds": round(time.monotonic() - t1, 1),
                                  "cpu_seconds": round(time.process_time() - c1, 1)}, trials)
                best = max((t["val_auc"] for t in trials if t["state"] == "complete"), default=float("nan"))
                log(f"  {data} {model} {strategy:<13} seed {seed}: {len(trials)} trials, best val {best:.5f}, "
                    f"{sum(t['samples'] for t in trials) / budget['samples']:.2f} of the grid's samples, "
                    f"{time.monotonic() - t1:.0f} s")
        log(f"== {data} x {model} done in {(time.monotonic() - t0) / 60:.1f} min "
            f"({(time.process_time() - c0) / 60:.1f} CPU-min); study so far {(time.monotonic() - t_start) / 60:.1f} min")


# relative cost of a grid's full compute vs DCN's on the same data (measured, 1 thread: samples/s and points)
_REL_COST = {"dcn": 1.0, "dnn": 0.4, "finalmlp": 1.1, "autoint_plus": 3.2}


def _print_estimate(args: argparse.Namespace, datas: list[str], models: list[str], strategies: list[str],
                    s: Setting, grid: Grid, budget: dict[str, float], log: Callable[[str], None]) -> None:
    """The whole study's expected CPU time from the first grid's compute (scaled by the measured relative cost of
    the other models' grids; datasets of the same row count)."""
    unit = budget["cpu_s"] / _REL_COST.get(s.model, 1.0)
    # --space grid replays the trained points: its strategy runs cost no training
    runs = 1 + (sum(st != "grid" for st in strategies) * args.seeds * args.fraction if args.space == "search" else 0)
    total = unit * runs * sum(_REL_COST.get(m, 1.0) for m in models) * len(datas)
    log(f"estimate: grid of {s.model} on {s.data} = {budget['samples'] / 1e6:.2f} M samples, {budget['cpu_s']:.0f} "
        f"CPU-s; each (data, model) runs the grid once + {runs - 1:.1f} grid-budgets of strategy runs; the whole "
        f"study ({len(datas)} data x {len(models)} models) ~ {total / 3600:.1f} CPU-hours")


def frappe_raw_dir(given: str | None) -> str:
    """Where Frappe_x1's valid/test files are: ``--frappe-raw``, else frappe_vt's ``data.raw_dir``
    (datasets/frappe_x1/raw), else the workplace's ../shared/datasets/frappe_x1/raw."""
    from bars.data.recipes import find_file

    if given:
        return given
    cands = [Path(str(compose(["data=frappe_vt"]).data.raw_dir)),
             PROJECT_ROOT.parent / "shared" / "datasets" / "frappe_x1" / "raw"]
    for c in cands:
        if find_file(c, ["valid.libsvm"]) and find_file(c, ["test.libsvm"]):
            return str(c)
    raise SystemExit(f"bars bench sweep: Frappe_x1's valid.libsvm[.gz] and test.libsvm[.gz] are in none of "
                     f"{[str(c) for c in cands]}: pass --frappe-raw DIR, or leave frappe_vt out of --data")


SETTINGS = ("epochs", "rows", "synthetic_rows", "fraction", "threads", "space")


def check_settings(out: Path, args: argparse.Namespace) -> None:
    """A study's cells must share their settings: the first run records them in ``<out>/study.json``; a later
    run with other values is an error naming the option (use another --out)."""
    path = out / "study.json"
    mine = {k: getattr(args, k) for k in SETTINGS}
    if not path.exists():
        atomic_write_text(path, json.dumps(mine, indent=1))
        return
    saved = json.loads(path.read_text())
    diff = [f"--{k.replace('_', '-')} {mine[k]} (the study in {out} has {saved.get(k)})" for k in SETTINGS
            if saved.get(k) != mine[k]]
    if diff:
        raise SystemExit(f"bars bench sweep: {'; '.join(diff)}: continue with its settings or use another --out")


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _logger(args: argparse.Namespace) -> Callable[[str], None]:
    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(line + "\n")

    return log


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bars bench sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=",".join(DATASETS), help="comma-separated datasets (data configs)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"subset of {','.join(STRATEGIES)}")
    ap.add_argument("--seeds", type=int, default=3, help="sampler seeds per strategy")
    ap.add_argument("--epochs", type=int, default=3, help="epoch cap of every trial (sweep.max_epochs)")
    ap.add_argument("--rows", type=int, default=20000,
                    help="data.rows of the real datasets (rows read from each file; 0 = all)")
    ap.add_argument("--synthetic-rows", type=int, default=20000, help="data.rows of the synthetic data")
    ap.add_argument("--fraction", type=float, default=0.3334,
                    help="share of the grid's compute a strategy run spends (1 = all of it)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    ap.add_argument("--space", choices=("grid", "search"), default="grid",
                    help="what random/TPE search: the grid's own points (grid: same space and costs as the grid) "
                         "or the model's conf/search space (search)")
    ap.add_argument("--frappe-raw", default=None,
                    help="folder with Frappe_x1's valid/test files (default: frappe_vt's data.raw_dir)")
    ap.add_argument("--data-dir", default=None, help="paths.data for the prepared datasets (default: the project's)")
    ap.add_argument("--out", default=str(PROJECT_ROOT / ".bench" / "sweep"))
    ap.add_argument("--log", default=None, help="also append progress lines to this file")
    ap.add_argument("--report-only", action="store_true", help="only write the report of the cells in --out")
    ap.add_argument("--docs", default=None, help="also write the report into this markdown file (+ img/ beside it)")
    ap.add_argument("--overhead", action="store_true", help="only measure a sweep trial's fixed cost (issue 16)")
    ap.add_argument("--overhead-trials", type=int, default=4)
    ap.add_argument("--no-overhead", action="store_true", help="skip the overhead measurement of a study run")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    from bars.benchmarks import sweep_report

    if args.overhead or (not args.report_only and not args.no_overhead):
        sweep_report.print_overhead(sweep_report.measure_overhead(args.overhead_trials, args.threads))
        if args.overhead:
            return 0
    if not args.report_only:
        if "frappe_vt" in _split(args.data):
            args.frappe_raw = frappe_raw_dir(args.frappe_raw)
        out.mkdir(parents=True, exist_ok=True)
        check_settings(out, args)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        run_study(args, out)
    expected = {"data": _split(args.data), "models": _split(args.models), "strategies": _split(args.strategies),
                "seeds": args.seeds}
    report = sweep_report.write_report(out, expected, docs=Path(args.docs) if args.docs else None)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
