"""`bars bench data [--rows 1000000,4000000] [--workdir DIR]`: preprocessing rows/s, peak RSS, load seconds.

Each size: a synthetic Criteo-format TSV is generated (not timed), then `bars prepare data=synthetic` runs in a
fresh process (wall time, CPU time and that process's own peak RSS via wait4), then the train split is loaded into
tensors in this process (its time reported separately; it does not count towards the preprocessing RSS). CPU
seconds make figures comparable on a machine shared with other work, where wall time is not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_ROWS_PER_S = 500_000


def main() -> int:
    ap = argparse.ArgumentParser(prog="bars bench data")
    ap.add_argument("--rows", default="1000000,4000000")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bars-bench-data"))
    args = ap.parse_args(sys.argv[1:])
    sizes = [int(x) for x in args.rows.split(",") if x]
    if max(sizes) > 4_000_000:
        print("bars bench data: at most 4,000,000 rows", file=sys.stderr)
        return 2
    from bars.data.loader import load_dataset
    from bars.data.synthetic import generate_criteo

    work = Path(args.workdir)
    results = []
    for n in sizes:
        raw = work / "raw"
        path = raw / f"synthetic_criteo_{n}_0.txt"
        if not path.exists():
            t = time.perf_counter()
            generate_criteo(path, n, 0)
            print(f"generated {n:,} rows in {time.perf_counter() - t:.1f} s: {path}", file=sys.stderr)
        data_dir = work / "data" / str(n)
        cmd = [sys.executable, "-m", "bars.cli", "prepare", "data=synthetic", f"data.rows={n}",
               f"data.raw_dir={raw}", f"paths.data={data_dir}"]
        if data_dir.exists():
            import shutil

            shutil.rmtree(data_dir)
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t
        out = proc.stdout.read()
        if os.waitstatus_to_exitcode(status) != 0:
            print(out, file=sys.stderr)
            print(f"prepare failed for {n} rows", file=sys.stderr)
            return 1
        folder = next(p for p in (data_dir / "synthetic").iterdir() if not p.name.startswith("."))
        t = time.perf_counter()
        ds = load_dataset(folder, splits=("train",))
        load_s = time.perf_counter() - t
        cpu = usage.ru_utime + usage.ru_stime
        results.append((n, secs, n / secs, usage.ru_maxrss / 1024, load_s, len(ds.splits["train"]), cpu))
    print(f"\nbars bench data (synthetic Criteo format, {os.cpu_count()} cores)")
    print(f"| rows | prepare s | rows/s | CPU s | rows/CPU-s | peak RSS MiB | load train s | train rows "
          f"| goal {GOAL_ROWS_PER_S:,} rows/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:--|")
    for n, secs, rate, rss, load_s, ntr, cpu in results:
        print(f"| {n:,} | {secs:.1f} | {rate:,.0f} | {cpu:.1f} | {n / cpu:,.0f} | {rss:,.0f} | {load_s:.2f} | {ntr:,} | "
              f"{'met' if rate >= GOAL_ROWS_PER_S else 'NOT met'} |")
    if len(results) > 1:
        print(f"peak RSS growth {results[0][0]:,} -> {results[-1][0]:,} rows: "
              f"{results[-1][3] / results[0][3]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
