"""`bars bench methods` (`make bench-methods`): what a method's stages cost per epoch, beside the plain backbone
(issue 13: "method stages add no measurable overhead per epoch beyond the method's own computation").

One backbone (default DNN; its MLP at [100, 100, 100]) on the shipped movielens_small, batch 1024, one thread. The
plain backbone and each method (default OptFS, DNIS, OptEmbed, OptInter) run for real through ``bars.run`` and
``bars.methods.run_method``, tracked in a temporary MLflow store. Every run's and every stage run's phase breakdown
(the ``time_<phase>_s`` metrics ``bars.run.train_one`` records, bars.timing) is read back from that store:

- ``train/ep``, ``valid/ep``: the epochs' training and validation passes, seconds per epoch. Inside them is the
  method's own computation: OptFS's gate per lookup, DNIS's selection step (a second forward and backward on a
  validation batch), OptEmbed's masks, OptInter's pair lookups and architecture step;
- ``rows/s``: training rows per second of the training pass, the mean over the epochs;
- ``rest/ep``: the rest of each epoch, the trainer's per-epoch bookkeeping plus the stage's per-epoch hook
  (``epoch_bookkeeping + on_epoch``, seconds per epoch). This is where overhead from the stage machinery itself
  would show;
- ``fixed``: the run's time outside the epochs (bars.timing.fixed_cost: config, load, build, tracking, test,
  checkpoint, artifacts);
- ``other``: OptEmbed's evolution stage, which trains nothing: its seconds in all (``epochs``: its generations).

A first plain run, whose figures are dropped, creates the store and checks the data before anything is measured.

``--repeats n`` runs the whole set n times, interleaved (plain, methods, plain, methods, ...), and prints the
median per row. A figure, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

METHODS = ("optfs", "dnis", "optembed", "optinter")
# the docs/methods.md setup: batch 1024 and the backbone's MLP at [100, 100, 100] (its key, where it has one)
DEFAULT_OVERRIDES = ("train.batch_size=1024",)
MLP_KEYS = ("hidden_units", "dnn_hidden_units")


def default_overrides(model: str) -> list[str]:
    """DEFAULT_OVERRIDES plus ``model.params.<its MLP key>=[100,100,100]`` when the model config has one of
    MLP_KEYS (DNN, DeepFM, IPNN: ``hidden_units``; DCN: ``dnn_hidden_units``; FM: none)."""
    from bars.config import compose

    params = compose([f"model={model}"]).model.params
    return [*DEFAULT_OVERRIDES, *(f"model.params.{k}=[100,100,100]" for k in MLP_KEYS if k in params)]


def stage_rows(uri: str, experiment: str, parent_id: str | None, label: str) -> list[dict]:
    """The figures of one run (no ``parent_id``: plain, ``label``) or of every stage run under a method's parent
    run, read from the MLflow store at ``uri``."""
    from bars.records import load_runs

    runs = load_runs(uri, [experiment], history_stages=())
    if parent_id is None:
        picked = [r for r in runs if r.run_id == label]
        names = ["plain"]
    else:
        picked = sorted((r for r in runs if r.parent_run_id == parent_id),
                        key=lambda r: int(r.tags.get("method_stage_index", "0")))
        names = [r.stage or "?" for r in picked]
    if not picked:
        raise RuntimeError(f"bench methods: no run {'of ' + label if parent_id else label} in experiment "
                           f"{experiment!r} at {uri}" + (f" under the parent run {parent_id}" if parent_id else ""))
    out = []
    for name, r in zip(names, picked, strict=True):
        m = r.metrics
        epochs = m.get("epochs", 0.0)
        if epochs and "time_train_s" in m:
            out.append({
                "stage": name, "epochs": int(epochs),
                "train": m["time_train_s"] / epochs, "valid": m.get("time_valid_s", 0.0) / epochs,
                "rest": (m.get("time_epoch_bookkeeping_s", 0.0) + m.get("time_on_epoch_s", 0.0)) / epochs,
                "rows_per_s": m.get("samples_per_s_mean"),
                "fixed": m.get("time_fixed_s", 0.0), "other": None,
            })
        else:  # a stage that trains nothing (OptEmbed's evolution: epochs = its generations): its seconds in all
            out.append({"stage": name, "epochs": int(epochs), "train": None, "valid": None, "rest": None,
                        "rows_per_s": None, "fixed": None, "other": m.get("fit_seconds")})
    return out


def _scoped(override: str) -> str:
    """The method an override is scoped to (``optembed:method.iterations=5``), or ``""``."""
    head = override.split("=", 1)[0]
    return head.split(":", 1)[0] if ":" in head else ""


def run_once(model: str, data: str, methods: list[str], seed: int, threads: int, root: Path,
             overrides: list[str], quiet: bool = True) -> dict[str, list[dict]]:
    """One plain run and one run of each method, tracked in ``root``'s MLflow store; their figures by label."""
    from bars.config import compose
    from bars.methods import run_method
    from bars.run import train_one

    uri = f"sqlite:///{root / 'mlflow.db'}"
    base = [f"model={model}", f"data={data}", f"seed={seed}", "train.device=cpu", f"train.num_threads={threads}",
            f"tracking.uri={uri}", "tracking.helper=false", f"tracking.spool_dir={root / 'spool'}",
            f"paths.results={root / 'results'}", f"paths.checkpoints={root / 'ckpt'}", *overrides]
    out: dict[str, list[dict]] = {}
    common = [o for o in base if not _scoped(o)]
    # method.* keys go to the methods' runs, "<method>:<override>" to that method's only
    cfg = compose([o for o in common if not o.lstrip("+").startswith("method.")])
    train_one(cfg, quiet=quiet)  # warm-up, dropped: creates the store, prepares or checks the data, loads modules
    r = train_one(cfg, quiet=quiet)
    out["plain"] = stage_rows(uri, str(cfg.tracking.experiment), None, r.run_id)
    for name in methods:
        own = [o.split(":", 1)[1] for o in base if _scoped(o) == name]
        cfg = compose([*common, f"method={name}", *own])
        r = run_method(cfg, quiet=quiet)
        out[name] = stage_rows(uri, str(cfg.tracking.experiment), r.run_id, name)
    return out


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bars bench methods", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dnn", help="the backbone's model config (default dnn)")
    ap.add_argument("--data", default="movielens_small")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--seed", type=int, default=2021)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the median per row is printed")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run; method.* ones for the methods' "
                    "runs only, <method>:<override> for that method's only (e.g. optembed:method.iterations=5); "
                    "default: train.batch_size=1024 and the backbone's MLP at [100,100,100]; giving any replaces "
                    "them")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        ap.error(f"--methods: unknown {unknown}; known: {list(METHODS)}" if unknown else "--methods: none given")
    if args.repeats < 1 or args.threads < 1:
        ap.error(f"--repeats and --threads must be >= 1, got {args.repeats} and {args.threads}")
    overrides = list(args.overrides) or default_overrides(args.model)
    stray = sorted({_scoped(o) for o in overrides} - {""} - set(methods))
    if stray:
        ap.error(f"overrides scoped to methods not in --methods: {stray} (--methods {','.join(methods)})")
    print(f"bars bench methods: {args.model} on {args.data}, seed {args.seed}, {args.threads} thread(s), "
          f"{args.repeats} repeat(s), overrides {overrides}")
    results: list[dict[str, list[dict]]] = []
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bars_bench_methods_") as tmp:
            results.append(run_once(args.model, args.data, methods, args.seed, args.threads, Path(tmp), overrides))
    print(f"{'run':<10} {'stage':<10} {'epochs':>6} {'train/ep s':>10} {'rows/s':>9} {'valid/ep s':>10} "
          f"{'rest/ep s':>9} {'fixed s':>8} {'other s':>8}")
    for label in ["plain", *methods]:
        for i, row in enumerate(results[0][label]):
            rows = [r[label][i] for r in results]
            med = {k: _median([r[k] for r in rows]) for k in ("train", "valid", "rest", "rows_per_s", "fixed",
                                                                  "other")}
            print(f"{label:<10} {row['stage']:<10} {row['epochs']:>6} {_fmt(med['train'], '10.3f')} "
                  f"{_fmt(med['rows_per_s'], '9,.0f')} {_fmt(med['valid'], '10.3f')} {_fmt(med['rest'], '9.4f')} "
                  f"{_fmt(med['fixed'], '8.2f')} {_fmt(med['other'], '8.2f')}")
    print(f"({time.perf_counter() - t0:.0f} s in all; rest/ep = the trainer's per-epoch bookkeeping + the stage's "
          "per-epoch hook; the method's own computation is inside train/ep and valid/ep)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
