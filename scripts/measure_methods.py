"""Backbone vs backbone + method, test AUC and what the method keeps, over seeds (docs/methods.md).

    python scripts/measure_methods.py --data movielens_small --models deepfm dcn --seeds 2021 2022 2023 \
        --method optfs --out results/methods_movielens.json [-- extra overrides for every run]

Every run is untracked (tracking.enabled=false), on the CPU with one thread; the method runs' folders go under
``--root``. Prints one line per run and a summary per model: mean test AUC of each side, the mean difference, the
mean fraction kept.

A control instead of a method: ``--fixed-dims '[5, 5, ...]'`` (one dimension per categorical field, or with
``--frequency-blocks '[10]'`` one per field and block, rarest block first) retrains the backbone from scratch under
that allocation, every row kept (bars.methods.optembed.FixedDimsStage): what an allocation costs without a search.

    python scripts/measure_methods.py --data movielens_small --models deepfm --seeds 2021 2022 \
        --fixed-dims '[5, 5, 5, 5, 5]'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bars.config import compose
from bars.methods.optembed import FixedDimsStage
from bars.run import train_one


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="movielens_small")
    ap.add_argument("--models", nargs="+", default=["deepfm", "dcn"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[2021, 2022, 2023])
    ap.add_argument("--method", default=None, help="the method (default optfs); not with --fixed-dims")
    ap.add_argument("--root", default="/tmp/bars_measure_methods")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-plain", action="store_true", help="the method's runs only (plain figures known already)")
    ap.add_argument("--fixed-dims", default=None, metavar="JSON",
                    help="instead of --method: retrain under this dimension allocation (a JSON list, one per "
                         "categorical field, or per field and block with --frequency-blocks)")
    ap.add_argument("--frequency-blocks", default="[]", metavar="JSON",
                    help="with --fixed-dims: training-count cutoffs, e.g. [10] (rarest block first)")
    ap.add_argument("overrides", nargs="*", help="overrides for every run (after --); method.* ones for the method's")
    args = ap.parse_args(argv)
    fixed = None
    if args.fixed_dims is not None:
        try:
            fixed = ([int(d) for d in json.loads(args.fixed_dims)], [int(c) for c in json.loads(args.frequency_blocks)])
        except (ValueError, TypeError) as e:
            ap.error(f"--fixed-dims / --frequency-blocks must be JSON lists of ints: {e}")
        if args.method is not None:
            ap.error(f"--fixed-dims replaces --method: give one of them, not both (got --method {args.method})")
        args.method = "fixed"
    elif args.method is None:
        args.method = "optfs"
    root = Path(args.root)
    base = [f"data={args.data}", "train.num_threads=1", "train.device=cpu", "tracking.enabled=false",
            f"paths.checkpoints={root / 'ckpt'}", f"paths.results={root / 'results'}"]
    rows = []
    for model in args.models:
        for seed in args.seeds:
            for method in ((args.method,) if args.no_plain else ("none", args.method)):
                t0 = time.time()
                # method.* overrides go to the method's runs only
                ov = [o for o in args.overrides if method != "none" or not o.lstrip("+").startswith("method.")]
                cfg = compose([f"model={model}", f"seed={seed}", *base,
                               *([f"method={method}"] if method not in ("none", "fixed") else []), *ov])
                r = train_one(cfg, quiet=True,
                              stage=FixedDimsStage(*fixed) if method == "fixed" and fixed is not None else None)
                m = r.metrics
                row = {"model": model, "seed": seed, "method": method, "val_auc": m.get("val_auc"),
                       "test_auc": m["test_auc"],
                       "test_logloss": m["test_logloss"], "epochs": r.epochs,
                       # what the method keeps: OptFS features, DNIS / OptEmbed embedding parameters, OptInter pairs
                       "kept": m.get("features_kept", m.get("embedding_params_kept", m.get("pairs_kept"))),
                       "kept_count": m.get("features_kept_count", m.get("embedding_params_kept_count",
                                                                          m.get("pairs_kept_count"))),
                       "total": m.get("features_total", m.get("embedding_params_total", m.get("pairs_total"))),
                       **({"pairs": [int(m[f"pairs_{c}"]) for c in ("memorise", "factorise", "naive")],
                           "pair_params": [m["pair_params_kept_count"], m["pair_params_total"]]}
                          if "pairs_total" in m else {}),
                       "rows_kept": m.get("embedding_rows_kept"),  # OptEmbed's second figure
                       "dims": {k[5:]: v for k, v in m.items() if k.startswith("dims_")} or None,
                       "seconds": time.time() - t0,
                       "seconds_per_epoch": m.get("seconds_per_epoch")}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    for model in ([] if args.no_plain else args.models):
        plain = {r["seed"]: r for r in rows if r["model"] == model and r["method"] == "none"}
        meth = {r["seed"]: r for r in rows if r["model"] == model and r["method"] != "none"}
        diffs = [meth[s]["test_auc"] - plain[s]["test_auc"] for s in args.seeds]
        kept = [meth[s]["kept"] for s in args.seeds]
        sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        print(f"{model}: plain {statistics.mean(p['test_auc'] for p in plain.values()):.5f}  "
              f"{args.method} {statistics.mean(x['test_auc'] for x in meth.values()):.5f}  "
              f"diff {statistics.mean(diffs):+.5f} +- {sd:.5f}  kept {statistics.mean(kept):.4f}  "
              f"(seeds {args.seeds})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
