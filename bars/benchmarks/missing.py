"""`bars bench missing`: the measured effect of x4 protocol choices, paired by seed:
``--experiment missing`` (default): the missing-value rule ``data.missing`` oov (FuxiCTR's learned OOV row) vs
padding (the zero row this project used before); ``--experiment monitor``: BARS x4's monitor AUC - logloss
(``train.monitor={val_auc: 1, val_logloss: -1}``) vs val_auc alone; both on the real Criteo and Avazu slices.
``--experiment batch``: x4's batch size 10000 vs 4096, on the seeded ``synthetic`` Criteo-format data
(``--rows``, default 1,000,000: 800,000 train rows, 80 vs 196 steps per epoch; the 8,000-row real slices would be
one step per epoch at either size, so they cannot show this effect).

Each slice is prepared by the real pipeline (``make data`` with the x4 recipe: Criteo min count 10, Avazu 2; the
raw Kaggle heads, split 8:1:1 by the seeded per-row assignment), once per rule, and each model is trained on both
with the same seeds by ``bars.run.train_one`` (tracking off): the BARS protocol (Adam 1e-3, early stopping with
LR decay, best weights) at the x4 embedding size 16 and monitor AUC - logloss, with a batch of 512 instead of x4's
10000 (8,000 train rows would be one step per epoch). It prints the share of categorical values that are missing,
then test AUC / logloss per setting (mean and standard deviation over seeds) and the paired difference
(FuxiCTR/BARS setting - the alternative).

    bars bench missing [--experiment missing|monitor] [--seeds 5] [--models deepfm,dcn] [--datasets criteo,avazu]
                       [--shared PATH] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bars.config import PROJECT_ROOT

EXPERIMENTS = {  # name: ((label, overrides) of the FuxiCTR/BARS setting, (label, overrides) of the alternative)
    "missing": (("oov", ["data.missing=oov"]), ("padding", ["data.missing=padding"])),
    "monitor": (("auc-logloss", ["data.missing=oov"]),  # the x4 dataset configs' monitor
                ("auc", ["data.missing=oov", "train.monitor=val_auc"])),
    "batch": (("10000", ["data.missing=oov", "train.batch_size=10000"]),  # the x4 configs' batch size
              ("4096", ["data.missing=oov", "train.batch_size=4096"])),
}
DEFAULT_DATASETS = {"missing": "criteo,avazu", "monitor": "criteo,avazu", "batch": "synthetic"}
SLICES = {"criteo": ("criteo_x4_001", "criteo_head10k"), "avazu": ("avazu_x4_001", "avazu_head10k")}
X4_MONITOR = "train.monitor={val_auc: 1, val_logloss: -1}"


def dataset_base(key: str, a: argparse.Namespace, tmp: str) -> tuple[str, str, list[str]]:
    """(data name, where its raw data is, the overrides every run on it shares) for a --datasets key."""
    common = [f"paths.data={tmp}/data", "tracking.enabled=false", f"train.max_epochs={a.max_epochs}",
              f"train.num_threads={a.threads}"]
    if key == "synthetic":  # generated into the temporary folder; x4's embedding size 16 is its protocol's
        raw = f"{tmp}/synthetic_raw"
        return "synthetic", f"generated, {a.rows:,} rows", ["data=synthetic", f"data.rows={a.rows}",
                                                            f"data.raw_dir={raw}", X4_MONITOR, *common]
    if key not in SLICES:
        raise SystemExit(f"bars bench missing: unknown dataset {key!r}; expected one of {sorted(SLICES) + ['synthetic']}")
    name, folder = SLICES[key]
    raw = shared_root(a.shared) / "datasets" / folder / "raw"
    return name, f"raw {folder}", [f"data={name}", f"data.raw_dir={raw}", "train.batch_size=512", *common]


def shared_root(arg: str | None) -> Path:
    for root in (arg, os.environ.get("BARS_SHARED"), PROJECT_ROOT.parent / "shared", "/work/shared"):
        if root and (Path(root) / "datasets").is_dir():
            return Path(root)
    raise SystemExit("bars bench missing: the raw Criteo/Avazu heads were not found (pass --shared PATH, the folder "
                     "holding datasets/criteo_head10k/raw and datasets/avazu_head10k/raw)")


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"


def main() -> int:
    ap = argparse.ArgumentParser(prog="bars bench missing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="missing")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", default="deepfm,dcn")
    ap.add_argument("--datasets", default=None, help="default: criteo,avazu (missing, monitor), synthetic (batch)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic data")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=30)
    a = ap.parse_args()

    from bars.config import compose
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare
    from bars.data.spec import OOV_INDEX, PAD_INDEX
    from bars.run import train_one

    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key in [d.strip() for d in (a.datasets or DEFAULT_DATASETS[a.experiment]).split(",") if d.strip()]:
            name, folder, base = dataset_base(key, a, tmp)
            pad = load_dataset(prepare(compose([*base, "data.missing=padding"]), quiet=True))
            cats = [f.name for f in pad.spec.features if f.type == "categorical"]
            tr = pad.splits["train"].features
            total = sum(tr[c].numel() for c in cats)
            missing = sum(int((tr[c] == PAD_INDEX).sum()) for c in cats)
            rare = sum(int((tr[c] == OOV_INDEX).sum()) for c in cats)
            print(f"{name} ({folder}): {len(pad.splits['train']):,} train rows, {len(cats)} categorical fields; "
                  f"missing {missing / total:.1%} of train values, OOV (rare) {rare / total:.1%}", flush=True)
            for model in [m.strip() for m in a.models.split(",") if m.strip()]:
                res = {label: {"auc": [], "logloss": [], "epochs": []} for label, _ in EXPERIMENTS[a.experiment]}
                for i in range(a.seeds):  # both settings per seed, so that an interrupted run still has pairs
                    for label, over in EXPERIMENTS[a.experiment]:
                        r = train_one(compose([*base, f"model={model}", *over, f"seed={2019 + i}"]))
                        res[label]["auc"].append(r.metrics["test_auc"])
                        res[label]["logloss"].append(r.metrics["test_logloss"])
                        res[label]["epochs"].append(r.best_epoch)
                        print(f"    {model} {label} seed {2019 + i}: test AUC {r.metrics['test_auc']:.5f} logloss "
                              f"{r.metrics['test_logloss']:.5f}, best epoch {r.best_epoch} of {r.epochs}, "
                              f"{r.seconds:.0f} s", flush=True)
                first, second = (label for label, _ in EXPERIMENTS[a.experiment])
                d_auc = [x - y for x, y in zip(res[first]["auc"], res[second]["auc"])]
                d_ll = [x - y for x, y in zip(res[first]["logloss"], res[second]["logloss"])]
                rows.append((name, model, _mean_sd(res[first]["auc"]), _mean_sd(res[second]["auc"]),
                             _mean_sd(d_auc), _mean_sd(res[first]["logloss"]), _mean_sd(res[second]["logloss"]),
                             _mean_sd(d_ll), (f"{statistics.fmean(res[first]['epochs']):.1f} / "
                                              f"{statistics.fmean(res[second]['epochs']):.1f}")))
                print("  " + " | ".join(rows[-1]), flush=True)
    first, second = (label for label, _ in EXPERIMENTS[a.experiment])
    print(f"\n{a.experiment}: {a.seeds} seeds each (2019..); test split; difference = {first} - {second}, paired "
          f"by seed; {time.perf_counter() - started:.0f} s in all\n")
    print(f"| dataset | model | AUC {first} | AUC {second} | ΔAUC | logloss {first} | logloss {second} | Δlogloss "
          f"| best epoch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
