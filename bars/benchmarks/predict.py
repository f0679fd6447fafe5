"""`bars bench predict [--models dcn] [--rows 1000000] [--threads N] [--repeat 3]`: predict rows/s vs validation.

For each model: one real recorded run (``bars.run.train_one``, one epoch on movielens_small, in a temporary MLflow
store and data folder), then

- ``valid/s``: rows/s of ``bars.train.evaluate`` (the run's ``eval_batch_size``, no_grad, metrics included) on
  the prepared train split's tensors (the largest split; validation does the same work per row), best of
  ``--repeat``;
- ``predict/s``: rows/s of ``bars.predict.predict_file`` on a raw CSV of ``--rows`` rows (movielens ratings.csv
  rows repeated, so every value is known to the vocabularies as in real use): reading the raw file, the recipe's
  transform (the movies join), encoding with the fitted vocabularies, scoring in batches, writing the Parquet
  output with one kept id column, and its sha256; not counted: loading the run (config, checkpoint, data
  fingerprint check: a fixed cost per command).

Goal: predict/s within 1.5x of valid/s (``valid/s / predict/s <= 1.5``): the same model work per row, plus the
raw-file path. Figures on the shared 2-core machine move with its load: the load average is printed.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

GOAL_RATIO = 1.5


def _raw_file(folder: Path, rows: int) -> Path:
    """A raw ratings CSV of ``rows`` rows (movielens ratings repeated), with a ``row_id`` column to keep."""
    import polars as pl

    from bars.config import PROJECT_ROOT

    with zipfile.ZipFile(PROJECT_ROOT / "datasets" / "movielens_small" / "raw" / "ml-latest-small.zip") as z:
        ratings = pl.read_csv(io.BytesIO(z.read("ml-latest-small/ratings.csv")))
    reps = -(-rows // ratings.height)
    big = pl.concat([ratings] * reps).head(rows).with_row_index("row_id")
    path = folder / f"ratings_{rows}.csv"
    big.write_csv(path)
    return path


def bench(model: str, root: Path, raw: Path, threads: int, repeat: int) -> tuple[float, float, int]:
    import torch

    from bars.config import compose
    from bars.data.loader import load_dataset
    from bars.predict import predict_file
    from bars.recorded import load_recorded_run
    from bars.run import train_one
    from bars.train import evaluate

    overrides = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"paths.data={root / 'data'}",
                 f"paths.checkpoints={root / 'ckpt'}", f"paths.predictions={root / 'predictions'}"]
    cfg = compose([f"model={model}", "data=movielens_small", "train.max_epochs=1", "train.device=cpu",
                   f"train.num_threads={threads}", *overrides])
    run_id = train_one(cfg, quiet=True, extra_tags={"stage": "bench"}).run_id
    current = compose(overrides)
    rec = load_recorded_run(run_id, current)
    split = load_dataset(rec.folder, splits=("train",)).splits["train"]
    bs = int(rec.cfg.train.eval_batch_size)
    if threads > 0:
        torch.set_num_threads(threads)
    evaluate(rec.model, split, bs, "cpu")  # warm-up
    valid = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        evaluate(rec.model, split, bs, "cpu")
        valid = max(valid, len(split) / (time.perf_counter() - t))
    pred, rows = 0.0, 0
    for _ in range(repeat):
        r = predict_file(run_id, raw, current, keep=["row_id"], device="cpu", progress=False, track=False,
                         say=lambda *_: None)
        pred, rows = max(pred, r.rows_per_s), r.rows
    return valid, pred, rows


def main() -> int:
    ap = argparse.ArgumentParser(prog="bars bench predict")
    ap.add_argument("--models", default="dcn", help="comma-separated model ids (conf/model/<id>.yaml)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the raw file to predict")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many timed runs of each")
    args = ap.parse_args(sys.argv[1:])
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    print(f"bars bench predict: {args.rows:,} raw rows, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, threads {args.threads or 'torch default'}")
    print(f"  {'model':<14} {'valid/s':>12} {'predict/s':>12} {'valid/predict':>14}")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bars-bench-predict-") as tmp:
        root = Path(tmp)
        raw = _raw_file(root, args.rows)
        for model in [m for m in args.models.split(",") if m]:
            valid, pred, rows = bench(model, root / model, raw, args.threads, args.repeat)
            ratio = valid / pred
            worst = max(worst, ratio)
            print(f"  {model:<14} {valid:12,.0f} {pred:12,.0f} {ratio:13.2f}x   ({rows:,} rows)", flush=True)
    ok = worst <= GOAL_RATIO
    print(f"predict within {worst:.2f}x of validation throughput (goal <= {GOAL_RATIO}x: {'met' if ok else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
