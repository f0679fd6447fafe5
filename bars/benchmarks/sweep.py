"""`bars bench sweep` (`make bench-sweep`): which sweep strategy spends a tuning budget best?

The study of issue 15: for each dataset x model, BARS's grid for the model (the reference: its full compute is
the budget unit) against random search, TPE (multivariate), TPE + median pruning (the default `bars sweep`) and
TPE + Hyperband, each run with several sampler seeds until it has spent the grid's compute (training samples
processed and process CPU-seconds; ``--fraction`` of it when time forces it). Samplers and pruners come from the
product's factories (``bars.study.make_sampler`` / ``make_pruner`` on a composed config), the search space is the
model's ``conf/search`` space (what ``bars sweep`` searches), trials are capped at ``--epochs`` epochs (the sweep's
``sweep.max_epochs``) and trained in-process through ``bars.run.train_one`` (tracking off).

Every (data, model, strategy, seed) cell is one JSON file under ``<out>/cells/`` written atomically when the cell
ends, so a killed study continues where it stopped (the grid also keeps its trained points as it goes). The
report (``--report-only``) reads whatever cells exist: a markdown table and plots (``bars.benchmarks.sweep_report``).

The grid is trained once per (data, model) with the protocol's training seed (as ``bars sweep`` trains every trial
with ``seed``): a grid "seed" is the order Optuna's GridSampler visits the points with that sampler seed, replayed
on the trained points (training is deterministic for a configuration, so training a point twice gives the same
result). ``--overhead`` measures a sweep trial's fixed cost through the real ``bars sweep`` path (issue 16).

    bars bench sweep [--data frappe_vt,movielens_small,synthetic] [--models dnn,dcn,finalmlp,autoint_plus]
                     [--strategies grid,random,tpe,tpe_median,tpe_hyperband] [--seeds 3] [--out .bench/sweep]
                     [--threads 1] [--epochs 3] [--rows 20000] [--fraction 1] [--report-only] [--overhead]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig, OmegaConf

from bars.config import PROJECT_ROOT, compose
from bars.fileio import atomic_write_text

DATASETS = ("frappe_vt", "movielens_small", "synthetic")
MODELS = ("dcn", "dnn", "finalmlp", "autoint_plus")
STRATEGIES = ("grid", "random", "tpe", "tpe_median", "tpe_hyperband")
STRATEGY_NAMES = {"grid": "BARS grid", "random": "random", "tpe": "TPE (multivariate)",
                  "tpe_median": "TPE + median pruning (default)", "tpe_hyperband": "TPE + Hyperband"}
# The product's sampler/pruner keys of each strategy (conf/sweep/default.yaml `sweep.sampler.name` /
# `sweep.pruner.name`); TPE's own settings (startup trials, multivariate, ...) stay the sweep defaults.
STRATEGY_OVERRIDES = {
    "grid": ["sweep.sampler.name=grid", "sweep.pruner.name=none"],
    "random": ["sweep.sampler.name=random", "sweep.pruner.name=none"],
    "tpe": ["sweep.sampler.name=tpe", "sweep.pruner.name=none"],
    "tpe_median": ["sweep.sampler.name=tpe", "sweep.pruner.name=median"],
    "tpe_hyperband": ["sweep.sampler.name=tpe", "sweep.pruner.name=hyperband"],
}
FRACTIONS = (1 / 9, 1 / 3, 2 / 3, 1.0)
FRACTION_LABELS = ("1/9", "1/3", "2/3", "1")


# --------------------------------------------------------------------------------------------------------------
# BARS's Frappe_x1 grids (tuner configs of reczoo/BARS at the presets' commit), on this project's config keys.
# `set` = what BARS used at every grid point (the model's conf/presets/bars/frappe_x1 values; embedding size,
# epochs and seed stay the dataset's protocol and the study's epoch cap); `axes` = the keys BARS varied.
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Grid:
    model: str
    axes: dict[str, list[Any]]
    set: dict[str, Any]
    source: str
    note: str = ""

    @property
    def points(self) -> int:
        return math.prod(len(v) for v in self.axes.values())


_EMB = "train.embedding_regularizer"
LOCAL_GRIDS: dict[str, tuple[dict[str, list[Any]], str, str]] = {
    "dcn": ({"model.params.dropout": [0.2, 0.3, 0.4], "model.params.num_cross_layers": [2, 3],
             _EMB: [0.005, 0.01, 0.05, 0.1, 0.2, 0.5]},
            "ranking/ctr/DCN/DCN_frappe_x1/DCN_frappe_x1_tuner_config_02 (36 expids)", ""),
    "dnn": ({"model.params.dropout": [0.2, 0.3, 0.4], _EMB: [0.005, 0.01, 0.05, 0.1, 0.2, 0.5]},
            "DCN_frappe_x1_tuner_config_02's dropout x embedding-regularizer axes on DNN's Frappe_x1 preset",
            ("BARS published only its best DNN point for Frappe_x1 (DNN_frappe_x1_tuner_config_02 has 1 expid): "
             "the study uses the 18-point dropout x regularizer grid BARS ran for DCN on the same split")),
    "finalmlp": ({"model.params.mlp1_dropout": [0.4, 0.5], "model.params.mlp2_dropout": [0.3, 0.4],
                  "model.params.use_fs": [False, True], "model.params.fs_hidden_units": [[400], [800]],
                  "model.params.num_heads": [2, 5]},
                 "ranking/ctr/FinalMLP/FinalMLP_frappe_x1/FinalMLP_frappe_x1_tuner_config_16 (32 expids)",
                 "the product includes fs_hidden_units with use_fs=false (same model twice), as BARS ran it"),
    "autoint_plus": ({"model.params.layer_norm": [False, True], "model.params.num_heads": [1, 4],
                      "model.params.use_wide": [False, True], "model.params.dropout": [0.1, 0.3]},
                     "ranking/ctr/AutoInt/AutoInt+_frappe_x1/AutoInt+_frappe_x1_tuner_config_06 (16 expids)", ""),
}
_NOT_SET = ("model.params.embedding_dim", "train.max_epochs", "seed")


def load_study_grid(model: str) -> Grid:
    """BARS's Frappe_x1 grid of ``model`` (replayed on every dataset of the study)."""
    try:  # the product's grids (conf/grids/bars, `sweep.sampler.name=grid`) when this checkout has them
        from bars import grids  # type: ignore[attr-defined]

        g = grids.load_grid(model, split="frappe_x1")
        if g.product and g.size >= 4:  # DNN's published Frappe_x1 grid is its one best point: LOCAL_GRIDS's
            return Grid(model, {k: list(v) for k, v in dict(g.axes).items()},
                        {k: v for k, v in dict(g.set).items() if k not in _NOT_SET},
                        f"conf/grids/bars/frappe_x1/{model}.yaml ({g.size} points)")
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    if model not in LOCAL_GRIDS:
        raise SystemExit(f"bars bench sweep: no BARS grid for model {model!r} (have {sorted(LOCAL_GRIDS)})")
    axes, source, note = LOCAL_GRIDS[model]
    preset = yaml.safe_load((PROJECT_ROOT / "conf" / "presets" / "bars" / "frappe_x1" / f"{model}.yaml").read_text())
    fixed = {k: v for k, v in preset["set"].items() if k not in axes and k not in _NOT_SET}
    return Grid(model, axes, fixed, f"reczoo/BARS@{preset['bars_commit'][:10]}:{source}", note)


def study_grid(out: Path, data: str, model: str) -> Grid:
    """The grid a study uses for (data, model): fixed in ``<out>/cells/<data>/<model>/grid/grid.json`` on first
    use, so a continued study replays the same points whatever grids the checkout has since."""
    path = cell_dir(out, data, model, "grid") / "grid.json"
    if path.exists():
        return Grid(**json.loads(path.read_text()))
    g = load_study_grid(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(g.__dict__, indent=1))
    return g


# --------------------------------------------------------------------------------------------------------------
# Samplers and pruners: the product's factories on a composed config
# --------------------------------------------------------------------------------------------------------------
def product_has_strategies(cfg: DictConfig) -> bool:
    return "name" in cfg.sweep.sampler and "name" in cfg.sweep.pruner


def make_strategy(strategy: str, cfg: DictConfig, seed: int, grid: Grid | None,
                  epochs: int) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    from bars import study as S

    if strategy == "grid":
        assert grid is not None
        return optuna.samplers.GridSampler({k: _choices(v) for k, v in grid.axes.items()}, seed=seed), \
            optuna.pruners.NopPruner()
    if product_has_strategies(cfg):  # `bars sweep`'s own factories, on the strategy's overrides
        return S.make_sampler(cfg, seed), S.make_pruner(cfg)
    # this checkout's factories build TPE + median only: random / no pruner / Hyperband built here, with the
    # settings conf/sweep/default.yaml documents for them
    sampler = optuna.samplers.RandomSampler(seed=seed) if strategy == "random" else S.make_sampler(cfg, seed)
    if strategy == "tpe_median":
        return sampler, S.make_pruner(cfg)
    if strategy == "tpe_hyperband":
        return sampler, optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return sampler, optuna.pruners.NopPruner()


def _choices(values: list[Any]) -> list[Any]:
    """GridSampler takes scalars: list values (hidden units) become their JSON text (decoded in the trial)."""
    return [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]


def _decode(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v


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
    """Train every grid point once (resumable: ``points.json`` is rewritten after each point)."""
    import itertools

    path = cell_dir(out, s.data, s.model, "grid") / "points.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    cfg = compose([*s.base, *[f"{k}={_hydra(v)}" for k, v in grid.set.items()]])
    keys = list(grid.axes)
    for combo in itertools.product(*grid.axes.values()):
        params = dict(zip(keys, combo, strict=True))
        key = json.dumps(params, sort_keys=True)
        if key in done:
            continue
        rec = train_trial(trial_cfg(cfg, params), s.train_rows)
        done[key] = {"params": params, **rec}
        atomic_write_text(path, json.dumps(done, indent=1))
        log(f"    grid point {len(done)}/{grid.points}: val {rec['val_auc']:.5f} test {rec['test_auc']:.5f} "
            f"{rec['epochs']} ep {rec['cpu_s']:.1f} CPU-s")
    return list(done.values())


def _hydra(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, bool)) or v is None else str(v)


def grid_cell(s: Setting, grid: Grid, seed: int, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid's trials in the order Optuna's GridSampler(seed) visits them, replayed on the trained points."""
    by_key = {json.dumps(p["params"], sort_keys=True): p for p in points}
    sampler, _ = make_strategy("grid", OmegaConf.create({}), seed, grid, s.epochs)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {k: _decode(trial.suggest_categorical(k, _choices(v))) for k, v in grid.axes.items()}
        rec = dict(by_key[json.dumps(params, sort_keys=True)])
        trials.append({"number": trial.number, **rec})
        return rec["val_auc"]

    study.optimize(objective, n_trials=grid.points)
    return trials


def strategy_cell(s: Setting, strategy: str, seed: int, budget: dict[str, float], fraction: float,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One strategy run: trials until its samples or its CPU-seconds reach ``fraction`` of the grid's (the
    trial that crosses the line finishes: the overshoot is recorded)."""
    from bars.search import space_of

    cfg = compose([*s.base, *(STRATEGY_OVERRIDES[strategy] if _product_keys() else [])])
    space = space_of(cfg)
    sampler, pruner = make_strategy(strategy, cfg, seed, None, s.epochs)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    trials: list[dict[str, Any]] = []
    spent = {"samples": 0.0, "cpu_s": 0.0}
    target = {k: fraction * budget[k] for k in spent}

    def objective(trial: optuna.Trial) -> float:
        params = {k: p.suggest(trial) for k, p in space.items()}
        tcfg = trial_cfg(cfg, params)
        last = int(tcfg.train.max_epochs)
        seen: dict[str, Any] = {"vals": []}
        c0, t0 = time.process_time(), time.monotonic()

        def on_epoch(ep: Any) -> None:
            seen["vals"].append(round(float(ep.val_auc), 6))
            trial.report(float(ep.val_auc), step=int(ep.epoch))
            if int(ep.epoch) < last and trial.should_prune():
                raise optuna.TrialPruned()

        try:
            rec = train_trial(tcfg, s.train_rows, on_epoch)
        except optuna.TrialPruned:
            n = len(seen["vals"])
            rec = {"state": "pruned", "epochs": n, "samples": n * s.train_rows,
                   "cpu_s": round(time.process_time() - c0, 3), "wall_s": round(time.monotonic() - t0, 3),
                   "val_aucs": seen["vals"], "val_auc": max(seen["vals"]), "test_auc": None}
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


def _product_keys() -> bool:
    return product_has_strategies(compose(["model=dnn", "data=movielens_small"]))


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
    # models two at a time (dcn, dnn first): each pair on every dataset before the next pair
    order = [(d, m) for i in range(0, len(models), 2) for d in datas for m in models[i:i + 2]]
    for data, model in order:
        s = Setting(data, model, base_overrides(data, model, args, out), epochs=args.epochs)
        cfg0 = compose(s.base)
        s.train_rows = train_rows_of(cfg0)
        grid = study_grid(out, data, model)
        log(f"== {data} x {model}: {s.train_rows:,} train rows, grid {grid.points} points "
            f"({grid.source}), epoch cap {args.epochs}")
        t0, c0 = time.monotonic(), time.process_time()
        points = run_grid_points(s, grid, out, log)
        budget = {"samples": float(sum(p["samples"] for p in points)),
                  "cpu_s": float(sum(p["cpu_s"] for p in points))}
        if not estimate_done:
            _print_estimate(args, datas, models, strategies, s, grid, budget, log)
            estimate_done = True
        meta = {"data": data, "model": model, "train_rows": s.train_rows, "epochs_cap": args.epochs,
                "grid_points": grid.points, "grid_source": grid.source, "grid_note": grid.note,
                "grid_budget": budget, "fraction": args.fraction, "overrides": s.base}
        for seed in range(args.seeds):
            for strategy in strategies:
                path = cell_path(out, data, model, strategy, seed)
                if path.exists():
                    continue
                t1, c1 = time.monotonic(), time.process_time()
                if strategy == "grid":
                    trials = grid_cell(s, grid, seed, points)
                else:
                    trials = strategy_cell(s, strategy, seed, budget, args.fraction, log)
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
    runs = 1 + sum(st != "grid" for st in strategies) * args.seeds * args.fraction
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


SETTINGS = ("epochs", "rows", "synthetic_rows", "fraction", "threads")


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
