"""`bars bench sweep` (`make bench-sweep`): how fast does the sweep find a good configuration?

TPE with median pruning (what ``bars sweep`` runs) against random search without pruning (a stand-in for the grid
searches BARS ran), with the same trial budget, three seeds each, on a fixed small real dataset (the first
``--rows`` rows of movielens_small, the shipped demo data) with real training through ``bars.run.train_one``
(tracking off). Prints, per method, the best validation AUC reached after k trials and after e total training
epochs (mean over seeds), and the epochs (and trials) each run needed to come within ``--tol`` (0.0005) of the
best value either method found. Takes about 5-10 minutes on a 2-core CPU with the defaults.

    bars bench sweep [--trials 12] [--seeds 3] [--rows 20000] [--epochs 4] [--tol 0.0005] [--out .bench/sweep]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import optuna

from bars.config import PROJECT_ROOT, compose
from bars.fileio import atomic_write_text

# A small DCN space on the same keys bars sweep searches (cheap nets so the benchmark runs on a CPU).
SPACE = {
    "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "train.embedding_regularizer": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
    "model.params.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
    "model.params.batch_norm": [True, False],
    "model.params.num_cross_layers": {"type": "int", "low": 1, "high": 4},
    "model.params.dnn_hidden_units": [[64, 64], [128, 64], [256, 128]],
}


def run_one(method: str, seed: int, args: argparse.Namespace, base: list[str]) -> list[dict]:
    from bars.run import train_one
    from bars.search import apply_params, parse_param

    space = {k: parse_param(k, v, Path("bench")) for k, v in SPACE.items()}
    cfg = compose(base)
    if method == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                        n_warmup_steps=args.warmup)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    log: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        params = {k: p.suggest(trial) for k, p in space.items()}
        tcfg = apply_params(cfg, params)
        seen = {"epochs": 0, "best": 0.0}

        def on_epoch(ep) -> None:
            seen["epochs"] = int(ep.epoch)
            seen["best"] = max(seen["best"], float(ep.val_auc))
            trial.report(float(ep.val_auc), int(ep.epoch))
            if trial.should_prune():
                raise optuna.TrialPruned()

        t0 = time.monotonic()
        state = "complete"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                r = train_one(tcfg, on_epoch=on_epoch, quiet=True)
            val = float(r.metrics["val_auc"])
            seen["epochs"] = int(r.epochs)
            return val
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            log.append({"trial": trial.number, "state": state, "epochs": seen["epochs"],
                        "val_auc": seen["best"] if state == "pruned" else None,
                        "seconds": time.monotonic() - t0})

    def record(study: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
        if ft.state == optuna.trial.TrialState.COMPLETE:
            log[-1]["val_auc"] = ft.value
        log[-1]["value"] = ft.value  # None when pruned: a pruned trial never counts as the best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=args.trials, callbacks=[record])
    best, epochs = 0.0, 0
    for row in log:
        epochs += row["epochs"]
        if row.get("value") is not None:
            best = max(best, row["value"])
        row["best_so_far"], row["epochs_so_far"] = best, epochs
    return log


def summarize(runs: dict[str, list[list[dict]]], tol: float) -> dict:
    """Targets are per seed: within ``tol`` of the best value either method found with that seed (and, for the
    record, the best over all seeds)."""
    top = max(r["best_so_far"] for logs in runs.values() for log in logs for r in log)
    n_seeds = min(len(logs) for logs in runs.values())
    targets = [max(logs[i][-1]["best_so_far"] for logs in runs.values()) - tol for i in range(n_seeds)]
    out: dict = {"best_either": top, "target": top - tol, "seed_targets": targets, "methods": {}}
    for method, logs in runs.items():
        reach = []
        for i, log in enumerate(logs[:n_seeds]):
            hit = next((r for r in log if r["best_so_far"] >= targets[i]), None)
            reach.append(None if hit is None else {"epochs": hit["epochs_so_far"], "trials": hit["trial"] + 1})
        out["methods"][method] = {
            "final_best": [log[-1]["best_so_far"] for log in logs],
            "total_epochs": [log[-1]["epochs_so_far"] for log in logs],
            "pruned": [sum(r["state"] == "pruned" for r in log) for log in logs],
            "reach": reach,
        }
    return out


def best_at_epochs(log: list[dict], e: int) -> float | None:
    best = None
    for r in log:
        if r["epochs_so_far"] > e:
            break
        best = r["best_so_far"]
    return best


def print_report(runs: dict[str, list[list[dict]]], s: dict, args: argparse.Namespace, secs: float) -> None:
    names = {"tpe": "TPE + median pruning", "random": "random search"}
    print(f"\nbars bench sweep: dcn on movielens_small[:{args.rows}], budget {args.trials} trials x "
          f"{args.seeds} seeds per method, max {args.epochs} epochs per trial, {secs / 60:.1f} min")
    print(f"best validation AUC either method found: {s['best_either']:.5f} (over all seeds); per seed, the "
          f"target is the best either found with that seed - {args.tol}: "
          f"{', '.join(f'{t:.5f}' for t in s['seed_targets'])}\n")
    ks = sorted({1, 2, 4, 6, 8, 10, 12, args.trials} & set(range(1, args.trials + 1)))
    print("mean best val AUC after k trials:")
    print("  " + "method".ljust(22) + "".join(f"k={k:<8}" for k in ks))
    for m, logs in runs.items():
        vals = [statistics.mean(log[k - 1]["best_so_far"] for log in logs) for k in ks]
        print("  " + names[m].ljust(22) + "".join(f"{v:<10.5f}" for v in vals))
    max_e = max(log[-1]["epochs_so_far"] for logs in runs.values() for log in logs)
    es = sorted({e for e in (5, 10, 15, 20, 30, 40, 50, 60) if e <= max_e} | {max_e})
    print("\nmean best val AUC after e total training epochs (runs that had not got there: their last value):")
    print("  " + "method".ljust(22) + "".join(f"e={e:<8}" for e in es))
    for m, logs in runs.items():
        row = []
        for e in es:
            vals = [best_at_epochs(log, e) for log in logs]
            vals = [v for v in vals if v is not None]
            row.append(f"{statistics.mean(vals):<10.5f}" if vals else "-".ljust(10))
        print("  " + names[m].ljust(22) + "".join(row))
    print(f"\nepochs (trials) to come within {args.tol} of the best either found with the same seed:")
    for m, d in s["methods"].items():
        per = ["not reached" if r is None else f"{r['epochs']} ({r['trials']})" for r in d["reach"]]
        got = [r["epochs"] for r in d["reach"] if r is not None]
        med = f"median {statistics.median(got):.0f} epochs" if got else "never"
        print(f"  {names[m]:<22} {', '.join(per)}  -> {med}; reached in {len(got)}/{len(d['reach'])} seeds; "
              f"total epochs {d['total_epochs']}, pruned trials {d['pruned']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bars bench sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--tol", type=float, default=0.0005)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--warmup", type=int, default=1, help="MedianPruner n_warmup_steps (epochs)")
    ap.add_argument("--methods", default="tpe,random", help="comma-separated subset of tpe,random")
    ap.add_argument("--out", default=str(PROJECT_ROOT / ".bench" / "sweep"))
    ap.add_argument("--summarize", metavar="RESULT_JSON", help="only print the report of a saved result.json")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.summarize:
        saved = json.loads(Path(args.summarize).read_text())
        for k, v in saved["args"].items():
            if k not in ("summarize", "out"):
                setattr(args, k, v)
        print_report(saved["runs"], summarize(saved["runs"], args.tol), args, saved.get("seconds", 0.0))
        return 0
    base = ["model=dcn", "data=movielens_small", f"data.rows={args.rows}", f"train.max_epochs={args.epochs}",
            "tracking.enabled=false", f"train.num_threads={args.threads}"]
    t0 = time.monotonic()
    from bars.data.prepare import prepare

    with contextlib.redirect_stdout(io.StringIO()):
        prepare(compose(base))
    runs: dict[str, list[list[dict]]] = {m: [] for m in args.methods.split(",")}
    for seed in range(args.seeds):
        for method, logs in runs.items():
            t1 = time.monotonic()
            log = run_one(method, seed, args, base)
            logs.append(log)
            print(f"  {method:<6} seed {seed}: best {log[-1]['best_so_far']:.5f} after {args.trials} trials, "
                  f"{log[-1]['epochs_so_far']} epochs, {time.monotonic() - t1:.0f} s", flush=True)
    s = summarize(runs, args.tol)
    print_report(runs, s, args, time.monotonic() - t0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "result.json", json.dumps({"args": vars(args), "summary": s, "runs": runs,
                                                       "seconds": time.monotonic() - t0}, indent=1))
    print(f"\nraw numbers: {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
