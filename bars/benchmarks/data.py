"""`bars bench data [--rows 1000000,4000000] [--workdir DIR] [--stream] [--keep-raw] [--cardinality criteo]
[--min-count N]`: preprocessing at any size.

Each size: a synthetic Criteo-format TSV is generated (not timed; written in chunks of 500,000 rows, so memory
stays flat at any size; reused when it exists), then `bars prepare data=synthetic` runs in a fresh process (wall
time, CPU time and that process's own peak RSS, its VmHWM as it reports it), then the train split is read back:
into tensors (the in-memory loader, skipped when it would not fit in half the available memory) and, with
``--stream``, one shuffled epoch through the streaming loader (rows/s, and this process's peak RSS growth). CPU
seconds make figures comparable on a machine shared with other work, where wall time is not. Before anything is
written the free disk is checked: a size needs about 256 bytes of raw text + 230 bytes of staged columns + 45
bytes of Parquet per row (45M rows: ~24 GB). The prepared output is deleted after each size; generated raw
files larger than 4M rows are deleted too unless ``--keep-raw``.

    make bench-data                   # 1M and 4M rows
    make bench-data ROWS=45000000     # Criteo size (~11.5 GB of text; minutes of both cores)
    make bench-data ROWS=45000000 ARGS="--cardinality criteo"   # and Criteo's vocabulary sizes (33.8M values)
    make bench-data ROWS=45000000 ARGS="--cardinality criteo --min-count 10"   # BARS's rule for raw Criteo

The default file's fields have 10 .. 100,000 values each, so its vocabularies are small at any size; with
``--cardinality criteo`` each field draws from as many values as Kaggle Criteo's has (its raw files go to
``raw_criteo_cardinality/``), and the vocabularies, not the rows, set the peak RSS. ``--min-count`` sets the
vocabulary threshold (default: the synthetic config's, 2; BARS's criteo_x4 rule is 10), which decides how many of
them are kept. The table's last columns say whether each size meets issue 14's goals: 750,000 rows/s and a peak
RSS under 1.5 GB (1.5e9 bytes).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_ROWS_PER_S = 750_000  # issue 14: at 45M rows on 2 cores
GOAL_PEAK_MIB = 1.5e9 / 2**20  # issue 14: under 1.5 GB at 45M rows
BYTES_PER_ROW = {"raw": 256, "stage": 230, "parquet": 45}  # measured on the generator's output (headroom included)
KEEP_RAW_UP_TO = 4_000_000


def disk_needed(rows: int, raw_exists: bool) -> int:
    per = BYTES_PER_ROW["stage"] + BYTES_PER_ROW["parquet"] + (0 if raw_exists else BYTES_PER_ROW["raw"])
    return rows * per


def check_disk(work: Path, rows: int, raw_exists: bool) -> None:
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    need = disk_needed(rows, raw_exists)
    if need > free:
        raise SystemExit(f"bars bench data: {rows:,} rows need about {need / 2**30:.1f} GiB of free disk under {work} "
                         f"(raw text, staged columns, Parquet); {free / 2**30:.1f} GiB are free. Use --workdir on a "
                         f"bigger disk or fewer rows")


# The prepare process is started by this one, so the peak RSS that wait4 reports for it (ru_maxrss) also counts
# this process's memory at the moment of the spawn (Linux keeps the high-water mark across exec: after generating
# 45M rows this process held ~1.4 GB). The child reports its own peak instead: VmHWM of its post-exec memory.
PEAK_MARK = "bench-peak-rss-kib"
CHILD = ("import atexit, sys\n"
         "def _peak():\n"
         "    try:\n"
         "        hwm = next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:'))\n"
         "    except (OSError, StopIteration):\n"
         "        return\n"
         f"    print('{PEAK_MARK}', hwm, file=sys.stderr, flush=True)\n"
         "atexit.register(_peak)\n"
         "from bars.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def child_peak_mib(stderr: str, usage) -> float:
    """The prepare process's own peak RSS (its VmHWM line); ru_maxrss from wait4 where /proc is missing."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(PEAK_MARK):
            return int(line.split()[1]) / 1024
    return usage.ru_maxrss / 1024


def cpu_s(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_loaders(folder: Path, stream: bool) -> dict:
    """Read the train split back: into tensors (when it fits) and, optionally, one shuffled streamed epoch."""
    import json

    from bars.data.loader import load_dataset
    from bars.data.spec import FeatureSpec
    from bars.data.stream import LoaderConfig, StreamSplit, available_memory, plan_modes

    out: dict = {}
    spec = FeatureSpec.load(folder / "feature_spec.json")
    rows = json.loads((folder / "manifest.json").read_text())["splits"]["train"]["rows"]
    fits = plan_modes(spec, {"train": rows}, LoaderConfig(), available_memory())["train"] == "memory"
    if fits:
        t = time.perf_counter()
        ds = load_dataset(folder, splits=("train",))
        out["load_s"] = time.perf_counter() - t
        out["train_rows"] = len(ds.splits["train"])
        del ds
    if stream:
        split = StreamSplit(folder / "train.parquet", spec)
        before = _peak_rss_mib()
        t, c = time.perf_counter(), time.process_time()
        n = sum(len(y) for _, y in split.batches(4096, shuffle=True, seed=0))
        out["stream_rows_per_s"] = n / (time.perf_counter() - t)
        out["stream_cpu_s"] = time.process_time() - c
        out["stream_rss_growth_mib"] = _peak_rss_mib() - before
        out["train_rows"] = n
    return out


def prepare_command(rows: int, raw: Path, data_dir: Path, min_count: int | None) -> list[str]:
    """The prepare process of one size (``min_count`` None: the synthetic config's)."""
    cmd = [sys.executable, "-c", CHILD, "prepare", "data=synthetic", f"data.rows={rows}", f"data.raw_dir={raw}",
           f"paths.data={data_dir}"]
    return cmd + ([f"data.min_count={min_count}"] if min_count is not None else [])


def main() -> int:
    ap = argparse.ArgumentParser(prog="bars bench data")
    ap.add_argument("--rows", default="1000000,4000000", help="comma-separated sizes (any size)")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bars-bench-data"))
    ap.add_argument("--stream", action="store_true", help="also time one shuffled epoch of the streaming loader")
    ap.add_argument("--keep-raw", action="store_true", help=f"keep generated files over {KEEP_RAW_UP_TO:,} rows")
    ap.add_argument("--cardinality", choices=("synthetic", "criteo"), default="synthetic",
                    help="criteo: every categorical field draws from as many values as Kaggle Criteo's has (33.8M in "
                         "all; bars.data.synthetic.CRITEO_CARDINALITY), where the vocabularies set the memory")
    ap.add_argument("--min-count", type=int, default=None,
                    help="the vocabulary threshold (data.min_count; default: the synthetic config's, 2)")
    args = ap.parse_args(sys.argv[1:])
    if args.min_count is not None and args.min_count < 1:
        print(f"bars bench data: --min-count {args.min_count}: expected a whole number >= 1", file=sys.stderr)
        return 2
    try:
        sizes = [int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()]
    except ValueError:
        print(f"bars bench data: --rows {args.rows!r}: expected comma-separated whole numbers", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1000:
        print("bars bench data: --rows: each size must be at least 1,000 rows", file=sys.stderr)
        return 2
    from bars.data.synthetic import generate_criteo

    work = Path(args.workdir)
    results = []
    for n in sizes:
        raw = work / ("raw" if args.cardinality == "synthetic" else f"raw_{args.cardinality}_cardinality")
        path = raw / f"synthetic_criteo_{n}_0.txt"
        check_disk(work, n, path.exists())
        if not path.exists():
            t = time.perf_counter()
            generate_criteo(path, n, 0, cardinality=args.cardinality)
            print(f"generated {n:,} rows ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f} s: "
                  f"{path}", file=sys.stderr, flush=True)
        data_dir = work / "data" / str(n)
        if data_dir.exists():
            shutil.rmtree(data_dir)
        cmd = prepare_command(n, raw, data_dir, args.min_count)
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t
        out, err = proc.stdout.read(), proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            print(out, err, file=sys.stderr)
            print(f"prepare failed for {n} rows", file=sys.stderr)
            return 1
        stages = [line.strip() for line in err.splitlines()  # the engine's stage lines (bars.data.engine)
                  if re.match(r"\s*(read: .* in |vocabularies: |encode \+ write: )", line)]
        folder = next(p for p in (data_dir / "synthetic").iterdir() if not p.name.startswith("."))
        parquet_mib = sum(f.stat().st_size for f in folder.glob("*.parquet")) / 2**20
        loaders = measure_loaders(folder, args.stream)
        cpu = cpu_s(usage)
        results.append({"rows": n, "secs": secs, "rate": n / secs, "rss": child_peak_mib(err, usage), "cpu": cpu,
                        "parquet_mib": parquet_mib, **loaders})
        print(f"  {n:,} rows: prepare {secs:.1f} s ({n / secs:,.0f} rows/s, {cpu_s(usage):.1f} CPU s); "
              f"{'; '.join(stages)}", file=sys.stderr, flush=True)
        shutil.rmtree(data_dir)
        if n > KEEP_RAW_UP_TO and not args.keep_raw:
            path.unlink()
    mc = "the config's min_count" if args.min_count is None else f"min_count {args.min_count}"
    print(f"\nbars bench data (synthetic Criteo format, {args.cardinality} cardinality, {mc}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end)")
    print(f"| rows | prepare s | rows/s | CPU s | rows/CPU-s | peak RSS MiB | Parquet MiB | load train s "
          f"| stream rows/s | stream RSS +MiB | goal {GOAL_ROWS_PER_S:,} rows/s | goal peak < 1.5 GB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|:--|")
    for r in results:
        load = f"{r['load_s']:.2f}" if "load_s" in r else "(does not fit)"
        stream = f"{r['stream_rows_per_s']:,.0f}" if "stream_rows_per_s" in r else "-"
        srss = f"{r['stream_rss_growth_mib']:,.0f}" if "stream_rss_growth_mib" in r else "-"
        print(f"| {r['rows']:,} | {r['secs']:.1f} | {r['rate']:,.0f} | {r['cpu']:.1f} | {r['rows'] / r['cpu']:,.0f} | "
              f"{r['rss']:,.0f} | {r['parquet_mib']:,.0f} | {load} | {stream} | {srss} | "
              f"{'met' if r['rate'] >= GOAL_ROWS_PER_S else 'NOT met'} | "
              f"{'met' if r['rss'] < GOAL_PEAK_MIB else 'NOT met'} |")
    if len(results) > 1:
        print(f"peak RSS growth {results[0]['rows']:,} -> {results[-1]['rows']:,} rows: "
              f"{results[-1]['rss'] / results[0]['rss']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
