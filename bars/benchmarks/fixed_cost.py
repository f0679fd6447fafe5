"""`bars bench train --breakdown`: where a whole run's wall time goes besides its epochs (issue 16).

    bars bench train --breakdown [--breakdown-data movielens_small,frappe_size] [--breakdown-epochs 1]
                     [--repeat 3] [--threads N]

Runs ``bars.run.train_one`` (DCN at its conf defaults, the BARS Frappe_x1 best configuration) in this process
on each dataset, tracking off and on (a fresh SQLite store in a temporary folder), and prints the median over
``--repeat`` runs of each phase of ``bars.timing.RUN_PHASES`` (what ``train_one`` records per run as MLflow
metrics ``time_<phase>_s``). ``fixed`` = total less the training and validation passes. The first run on each
dataset prepares it (that run and the imports it triggers are not in the medians; its total is printed apart).
Tracking off and on alternate, so a change in the machine's load hits both alike.

Datasets: ``movielens_small`` (the demo data shipped in datasets/movielens_small/raw) and ``frappe_size``: the
Frappe_x1 layout and size (202,027 / 57,722 / 28,860 rows, 10 one-hot fields with BARS's vocabulary sizes)
generated as AFN libsvm files and prepared by the real ``frappe_x1`` recipe (md5 check off: the files are
synthetic), so preparing, loading and the model are those of a Frappe_x1 run.
"""

from __future__ import annotations

import gzip
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bars.timing import PASSES, RUN_PHASES, fixed_cost

FRAPPE_ROWS = {"train": 202_027, "valid": 57_722, "test": 28_860}
DATASETS = ("movielens_small", "frappe_size")


def write_frappe_size(raw_dir: Path, seed: int = 0, rows: dict[str, int] | None = None) -> Path:
    """Frappe_x1-shaped AFN libsvm files (label, then one ``id:1`` per field, ids offset per field)."""
    from bars.benchmarks.train_models import FRAPPE_VOCAB

    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = list(FRAPPE_VOCAB.values())
    offsets = np.cumsum([0, *vocab[:-1]])
    for split, n in (rows or FRAPPE_ROWS).items():
        # skewed draws (more mass on low ids) within each field's id range, about 1/3 positives
        ids = [(o + (rng.random(n) ** 3 * (v - 1)).astype(np.int64)) for o, v in zip(offsets, vocab)]
        label = (rng.random(n) < 0.33).astype(np.int64)
        cols = [label.astype(str)] + [np.char.add(i.astype(str), ":1") for i in ids]
        lines = cols[0]
        for c in cols[1:]:
            lines = np.char.add(np.char.add(lines, " "), c)
        with gzip.open(raw_dir / f"{split}.libsvm.gz", "wt", compresslevel=1) as f:
            f.write("\n".join(lines.tolist()) + "\n")
    return raw_dir


def _overrides(data: str, root: Path, raw: Path, tracking: bool, epochs: int, threads: int) -> list[str]:
    base = ["model=dcn", f"train.max_epochs={epochs}", f"train.num_threads={threads}",
            f"tracking.enabled={str(tracking).lower()}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "tracking.experiment=fixed-cost", f"tracking.spool_dir={root / 'spool'}",
            f"paths.data={root / 'data'}", f"paths.checkpoints={root / 'ckpt'}"]
    if data == "frappe_size":
        return ["data=frappe_x1", f"data.raw_dir={raw}", "data.verify_md5=false", *base]
    return [f"data={data}", *base]


def _one(overrides: list[str]) -> dict[str, float]:
    from bars.config import compose
    from bars.run import train_one

    return train_one(compose(overrides), quiet=True).phases


def _table(title: str, cols: dict[str, dict[str, float]]) -> str:
    names = list(cols)
    lines = [title, f"{'phase':<18}" + "".join(f"{n:>14}" for n in names)]
    keys = [*RUN_PHASES, "other", "total", "fixed"]
    for k in keys:
        vals = [cols[n].get(k, 0.0) for n in names]
        if k in RUN_PHASES and not any(vals):
            continue
        lines.append(f"{k:<18}" + "".join(f"{v:>14.3f}" for v in vals))
    return "\n".join(lines)


def run(datasets: list[str], epochs: int = 1, repeat: int = 3, threads: int = 0,
        frappe_rows: dict[str, int] | None = None) -> dict[str, dict[str, dict]]:
    """{dataset: {"tracking off"|"tracking on": median breakdown, "first run": its breakdown}}; prints the
    tables as it goes. ``frappe_rows`` changes the size of ``frappe_size`` (tests)."""
    import torch

    threads = threads or torch.get_num_threads()
    out: dict[str, dict[str, dict]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bars-fixed-cost-"))
    try:
        for data in datasets:
            raw = tmp / "raw" / data
            if data == "frappe_size":
                write_frappe_size(raw, rows=frappe_rows)
            t = time.perf_counter()
            first = _one(_overrides(data, tmp, raw, True, epochs, threads))  # prepares the data, warms imports
            big = sorted(((v, k) for k, v in first.items() if k not in ("total", *PASSES)), reverse=True)[:4]
            print(f"  {data}: first run (prepares the data, creates the store, first imports) "
                  f"{time.perf_counter() - t:.1f}s, fixed {fixed_cost(first):.2f}s: "
                  + ", ".join(f"{k} {v:.2f}s" for v, k in big), flush=True)
            runs: dict[str, list[dict[str, float]]] = {"tracking off": [], "tracking on": []}
            for _ in range(repeat):
                for mode, kept in runs.items():  # interleaved: the machine's load hits both alike
                    kept.append(_one(_overrides(data, tmp, raw, mode == "tracking on", epochs, threads)))
            med: dict[str, dict[str, float]] = {}
            for mode, rs in runs.items():
                keys = {k for r in rs for k in r}
                med[mode] = {k: statistics.median(r.get(k, 0.0) for r in rs) for k in keys}
                med[mode]["fixed"] = statistics.median(fixed_cost(r) for r in rs)
            out[data] = {**med, "first run": first}
            print()
            print(_table(f"{data}: DCN, {epochs} epoch(s), median of {repeat} runs (seconds)", med), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(datasets: str, epochs: int, repeat: int, threads: int) -> int:
    names = [d for d in datasets.split(",") if d]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        print(f"bars bench train --breakdown: unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
        return 2
    print(f"bars bench train --breakdown: {', '.join(names)}; {epochs} epoch(s), {repeat} runs per mode; load "
          f"average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} cores")
    res = run(names, epochs, repeat, threads)
    print()
    for data, med in res.items():
        print(f"{data}: fixed cost (total less the {'/'.join(PASSES)} passes): tracking off "
              f"{med['tracking off']['fixed']:.2f}s, on {med['tracking on']['fixed']:.2f}s (goal <= 1 s with "
              f"tracking on: {'met' if med['tracking on']['fixed'] <= 1.0 else 'NOT met'})")
    print(f"load average now {os.getloadavg()[0]:.1f}")
    return 0


__all__ = ["DATASETS", "FRAPPE_ROWS", "main", "run", "write_frappe_size"]
