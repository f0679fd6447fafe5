#!/usr/bin/env python3
"""One command that checks a GPU machine end to end and prints a table: ``scripts/gpu-check`` (``make gpu-check``).

Steps (each in its own process, with a time limit; one table row per result):

1. ``env``: torch, its CUDA build, the visible GPUs (name, memory).
2. ``cuda-tests``: the test functions with ``cuda`` in their name (forward/backward of every model on CUDA, the
   bench's CUDA step). On a GPU none may be skipped, so tests that only make sense without a GPU keep ``cuda`` out
   of their names.
3. ``bench-train``: ``bars bench train --device cuda`` for DCN, DeepFM and DNN at the Frappe_x1 shape and at the
   Criteo_x1 shape (2.55M embedding rows): training samples/s, step/s, validation rows/s per model; then the same
   with ``--cuda-graph`` (``train.cuda_graph``: full batches replay a captured CUDA graph of the step). Issue 14's
   goal: the Frappe DCN >= 3M training samples/s.
4. ``sweep``: a real sweep (``data=synthetic``, generated in a temporary root, DCN, 1 epoch per trial) with
   ``sweep.workers_per_gpu=2``: every trial must finish (complete or pruned), record a GPU, and 2 workers must have run trials on
   one GPU.
5. ``packing``: the same sweep (DCN, 250,000 synthetic rows = a Frappe_x1-size training split, up to 8 epochs
   per trial on a GPU: the first H200 run's 2-epoch trials took ~2 s, too short to be more than start-up) with 1 worker on one GPU and with 8 packed on it (``sweep.workers_per_gpu``): trials/hour of each, from
   the command's wall time (processes, data preparation and tracking included) and from the trials' own span.
   Issue 14's goal: 8 packed workers >= 4x the trials/hour of one. ``--pack-per-worker k``: k trials per packed
   worker (default 4; the lone worker gets k + 2). On ``--cpu``: 1 CPU worker against 2.
6. ``precision``: seeded DCN runs (conf defaults, 250,000 synthetic rows, 6 epochs) in fp32, with
   ``train.tf32=true``, with ``train.precision=bf16`` and with ``train.cuda_graph=true``: test AUC and logloss
   against fp32's at the same seed (mean difference, its standard error, seeds within 0.001), training
   samples/s (issue 14: the switches' measured effect on AUC). ``--seeds n``: n seeds from 2021 on (default 8 on a
   GPU, 1 with ``--cpu``); ``--jobs j``: j runs at once (default 8 on a GPU, at most half the cores). On ``--cpu``
   TF32 and the graph do nothing, so their rows must equal fp32's.
7. ``ddp``: ``bars train train.processes=2`` (torchrun, DistributedDataParallel) against one process, DCN on
   synthetic data without dropout or batch norm: on 2 GPUs (NCCL) when there are 2, else 2 CPU processes (gloo);
   the two test AUCs must agree within 0.001.

Without a visible CUDA device it stops before running anything (exit 2). ``--cpu`` runs the same steps on the CPU
at small sizes (2 CPU sweep workers in place of 2 per GPU; the CUDA tests are then expected to skip): that is how
the script itself is tested on a machine without a GPU. Exit status: 0 when every step passed, 1 otherwise.

    scripts/gpu-check                 # on the GPU machine: a few minutes
    scripts/gpu-check --steps precision,packing --seeds 24 --pack-per-worker 8   # ~5 min on an H200
    scripts/gpu-check --cpu --quick   # the script's own paths, on the CPU
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_MODELS = "dcn,deepfm,dnn"
# bars bench train's table rows: name, params, train/s, train/cpu-s, step/s, valid/s, secs
BENCH_ROW = re.compile(r"^(\S+ @ .+?)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s*$")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


@dataclass
class Result:
    step: str
    status: str  # PASS, FAIL, SKIP, N/A
    detail: str
    seconds: float = 0.0


LOGS: Path | None = None  # --logs: every command's whole output is appended to <folder>/<step>.log
STEP = "gpu-check"
_LOG_LOCK = threading.Lock()


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run a command from the project root; (exit status, stdout + stderr, seconds). A timeout is status 124."""
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, out = 124, out + f"\n(timed out after {timeout:.0f} s)"
    secs = time.perf_counter() - t
    if LOGS is not None:
        with _LOG_LOCK:  # the precision row's runs finish in threads: one command's output stays in one piece
            LOGS.mkdir(parents=True, exist_ok=True)
            with open(LOGS / f"{STEP}.log", "a") as f:
                f.write(f"$ {' '.join(cmd)}\n(exit {rc}, {secs:.1f} s)\n{out}\n")
    return rc, out, secs


def tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def check_env(cpu: bool) -> tuple[Result, list[str]]:
    import torch

    if not torch.cuda.is_available():
        detail = f"torch {torch.__version__}, no CUDA device visible"
        return Result("env", "PASS" if cpu else "FAIL", detail), []
    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)} "
            f"({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())]
    return Result("env", "PASS", f"torch {torch.__version__} (CUDA {torch.version.cuda}); " + "; ".join(gpus)), gpus


def parse_pytest(out: str) -> dict[str, int]:
    """Counts from pytest's last summary line ("3 passed, 2 skipped in 1.2s")."""
    lines = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)", ln)]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for n, what in PYTEST_COUNT.findall(lines[-1] if lines else ""):
        key = "error" if what.startswith("error") else what
        if key in counts:
            counts[key] = int(n)
    return counts


def cuda_tests(cpu: bool, timeout: float) -> Result:
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-k", "cuda", "tests"]
    rc, out, secs = run(cmd, timeout)
    c = parse_pytest(out)
    detail = f"{c['passed']} passed, {c['skipped']} skipped, {c['failed'] + c['error']} failed"
    if rc not in (0, 5) or c["failed"] or c["error"] or (rc == 0 and not c["passed"] and not c["skipped"]):
        return Result("cuda-tests", "FAIL", f"{detail} (pytest exit {rc})\n{tail(out)}", secs)
    if not cpu and (c["skipped"] or not c["passed"]):
        return Result("cuda-tests", "FAIL", f"{detail}: on a GPU no CUDA test may skip", secs)
    return Result("cuda-tests", "PASS", detail + (" (no CUDA: the CUDA tests skip)" if cpu else ""), secs)


def parse_bench_train(out: str) -> list[dict]:
    rows = []
    for line in out.splitlines():
        m = BENCH_ROW.match(line)
        if m:
            name, params, train, _cpu_s, step, valid, secs = m.groups()
            num = lambda s: float(s.replace(",", ""))
            rows.append({"name": name.strip(), "params": int(num(params)), "train_per_s": num(train),
                         "step_per_s": num(step), "valid_per_s": num(valid), "seconds": float(secs)})
    return rows


GOAL_GPU_SAMPLES_PER_S = 3_000_000  # issue 14: light DCN (Frappe shape), whole split on one H100/H200-class GPU


def bench_train(device: str, quick: bool, timeout: float) -> list[Result]:
    """``bars bench train`` eagerly and, on CUDA, again with ``--cuda-graph`` (rows marked "+ graph")."""
    sizes = (["--frappe-rows", "8192", "--criteo-rows", "8192", "--valid-rows", "16384"] if quick else
             ["--frappe-rows", str(100 * 4096), "--criteo-rows", str(100 * 4096), "--valid-rows", str(8 * 16384)])
    results = []
    for graph in ([False] if device == "cpu" else [False, True]):
        cmd = [sys.executable, "-m", "bars.cli", "bench", "train", "--device", device, "--skip-zoo",
               "--frappe-models", BENCH_MODELS, "--criteo-models", BENCH_MODELS, *sizes,
               *(["--cuda-graph"] if graph else [])]
        rc, out, secs = run(cmd, timeout)
        rows = parse_bench_train(out)
        expected = len(BENCH_MODELS.split(",")) * 2
        mark = " + graph" if graph else ""
        if rc != 0 or len(rows) != expected:
            results.append(Result(f"bench-train{mark}", "FAIL",
                                  f"exit {rc}, {len(rows)} of {expected} model rows\n{tail(out)}", secs))
            continue
        for r in rows:
            goal = ""
            if r["name"].startswith("dcn @ Frappe") and device != "cpu":
                met = r["train_per_s"] >= GOAL_GPU_SAMPLES_PER_S
                goal = f"; goal {GOAL_GPU_SAMPLES_PER_S:,}/s: {'met' if met else 'NOT met'}"
            results.append(Result(f"bench-train {r['name']}{mark}", "PASS",
                                  f"{r['train_per_s']:,.0f} train/s, {r['step_per_s']:,.0f} step/s, "
                                  f"{r['valid_per_s']:,.0f} valid/s ({r['params']:,} params, {device}){goal}",
                                  r["seconds"]))
    return results


def sweep_overrides(root: Path, cpu: bool, gpus: int) -> list[str]:
    """CPU: 2 trials per worker on 20,000 rows. GPU: 6 per worker on 100,000 rows, 2 epochs: a GPU trial takes
    about a second, so with fewer the worker that starts first can finish them all before the second has
    imported torch (seen on the first H200 run: 4 trials, all on one worker)."""
    workers = 2 if cpu else 2 * gpus
    placement = ["sweep.devices=cpu", "sweep.workers=2"] if cpu else ["sweep.workers_per_gpu=2"]
    rows, epochs, per_worker = (20000, 1, 2) if cpu else (100000, 2, 6)
    return ["model=dcn", "data=synthetic", f"data.rows={rows}", f"paths.root={root}", f"train.max_epochs={epochs}",
            f"sweep.trials={per_worker * workers}", "tracking.experiment=gpu-check", *placement]


def study_trials(overrides: list[str]) -> tuple[list, str]:
    """Every trial (Optuna FrozenTrial) of the sweep those overrides name, and the user attribute that names the
    worker of a trial."""
    sys.path.insert(0, str(ROOT))
    from bars import study as ST
    from bars.config import compose

    cfg = compose(overrides)
    return ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), 0).get_trials(deepcopy=False), ST.WORKER_ATTR


def trial_placement(overrides: list[str]) -> list[tuple[str, str, str]]:
    """(state, device, worker) of every trial of the sweep those overrides name, read from its Optuna study."""
    trials, worker = study_trials(overrides)
    return [(t.state.name, str(t.user_attrs.get("device", "")), str(t.user_attrs.get(worker, ""))) for t in trials]


def judge_sweep(trials: list[tuple[str, str, str]], cpu: bool) -> tuple[bool, str]:
    """Every trial finished (complete or pruned) on the expected kind of device; some device shared by 2 workers."""
    per_device: dict[str, set[str]] = {}
    for _, device, worker in trials:
        per_device.setdefault(device, set()).add(worker)
    done = sum(s in ("COMPLETE", "PRUNED") for s, _, _ in trials)
    shape = ", ".join(f"{d or '?'}: {len(w)} worker(s)" for d, w in sorted(per_device.items()))
    detail = f"{done}/{len(trials)} trials finished; {shape}"
    kind_ok = all((d == "cpu") if cpu else d.startswith("cuda:") for d in per_device)
    ok = bool(trials) and done == len(trials) and kind_ok and max(len(w) for w in per_device.values()) >= 2
    return ok, detail


PACK_WORKERS = 8
PACK_GOAL = 4.0  # issue 14: 8 packed workers on one GPU >= 4x the trials/hour of one worker


PACK_PER_WORKER = 4  # --pack-per-worker


def pack_trials(cpu: bool, workers: int, per_worker: int = PACK_PER_WORKER) -> int:
    """Trials of a packing sweep: on a GPU ``per_worker`` (4) per packed worker (a lone one: 2 more), so that
    start-up, and the workers that start late, weigh less (2 per worker on the first H200 run: 6 of 8 workers ran
    trials); CPU: 2 each."""
    return max(4, 2 * workers) if cpu else (per_worker + 2 if workers == 1 else per_worker * workers)


def packing_overrides(root: Path, cpu: bool, workers: int, quick: bool,
                      per_worker: int = PACK_PER_WORKER) -> list[str]:
    """One sweep of the packing step: ``workers`` workers on GPU 0 (or ``workers`` CPU processes), DCN on a
    Frappe_x1-size synthetic split; :func:`pack_trials` trials."""
    placement = (["sweep.devices=cpu", f"sweep.workers={workers}"] if cpu else
                 ["sweep.devices=[0]", f"sweep.workers_per_gpu={workers}"])
    rows, epochs = (20000, 2) if quick else (250000, 2 if cpu else 8)
    return ["model=dcn", "data=synthetic", f"data.rows={rows}", f"paths.root={root}", f"train.max_epochs={epochs}",
            f"sweep.max_epochs={epochs}",
            f"sweep.trials={pack_trials(cpu, workers, per_worker)}", f"tracking.experiment=gpu-check-pack{workers}",
            "sweep.progress=plain", *placement]


def trial_span(overrides: list[str]) -> tuple[int, float, float, int]:
    """(finished trials, seconds from the first trial's start to the last one's end, mean seconds per trial,
    workers that ran trials) of that sweep's study."""
    every, worker = study_trials(overrides)
    trials = [t for t in every if t.state.name in ("COMPLETE", "PRUNED") and t.datetime_start and t.datetime_complete]
    if not trials:
        return 0, 0.0, 0.0, 0
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    mean = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials) / len(trials)
    workers = len({str(t.user_attrs.get(worker, "")) for t in trials})
    return len(trials), (end - start).total_seconds(), mean, workers


def packing_check(cpu: bool, quick: bool, timeout: float, per_worker: int = PACK_PER_WORKER) -> Result:
    """Trials/hour of one worker against ``PACK_WORKERS`` packed on one GPU (2 CPU processes with --cpu)."""
    many = 2 if cpu else PACK_WORKERS
    rate: dict[int, tuple[float, float, float, int]] = {}
    secs = 0.0
    for workers in (1, many):
        with tempfile.TemporaryDirectory(prefix=f"bars-gpu-check-pack{workers}-") as tmp:
            ov = packing_overrides(Path(tmp), cpu, workers, quick, per_worker)
            rc, out, s = run([sys.executable, "-m", "bars.cli", "sweep", *ov], timeout)
            secs += s
            if rc != 0:
                return Result("packing", "FAIL", f"{workers} worker(s): exit {rc}\n{tail(out)}", secs)
            n, span, mean, ran = trial_span(ov)
        if n < pack_trials(cpu, workers, per_worker) or span <= 0:
            return Result("packing", "FAIL", f"{workers} worker(s): {n} trials finished", secs)
        rate[workers] = (3600 * n / s, 3600 * n / span, mean, ran)
    wall = rate[many][0] / rate[1][0]
    inner = rate[many][1] / rate[1][1]
    steady = many * rate[1][2] / rate[many][2]  # every worker busy: workers x (trial time alone / packed)
    where = "CPU processes" if cpu else "workers on one GPU"
    goal = "" if cpu else f"; goal >= {PACK_GOAL:g}x: {'met' if wall >= PACK_GOAL else 'NOT met'}"
    return Result("packing", "PASS",
                  f"trials/hour, 1 vs {many} {where}: {rate[1][0]:,.0f} vs {rate[many][0]:,.0f} by wall time "
                  f"({wall:.2f}x), {rate[1][1]:,.0f} vs {rate[many][1]:,.0f} over the trials' span ({inner:.2f}x)"
                  f"{goal}; a trial took {rate[1][2]:.1f} s alone, {rate[many][2]:.1f} s packed "
                  f"({rate[many][3]} workers ran trials; with all {many} busy: {steady:.1f}x)", secs)


def sweep_check(cpu: bool, gpus: int, timeout: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="bars-gpu-check-") as tmp:
        ov = sweep_overrides(Path(tmp), cpu, gpus)
        rc, out, secs = run([sys.executable, "-m", "bars.cli", "sweep", *ov], timeout)
        if rc != 0:
            return Result("sweep", "FAIL", f"exit {rc}\n{tail(out)}", secs)
        ok, detail = judge_sweep(trial_placement(ov), cpu)
    where = "2 CPU worker processes" if cpu else "sweep.workers_per_gpu=2"
    return Result("sweep", "PASS" if ok else "FAIL", f"{where}: {detail}", secs)


DDP_TOLERANCE = 1e-3  # test AUC, 2 processes against 1 (issue 14's goal for DDP)


def ddp_overrides(root: Path, device: str) -> list[str]:
    """DCN on synthetic data without dropout or batch norm, so that 2 processes and 1 compute the same model up to
    the order of float sums (with them, each process draws its own masks and normalises its own share)."""
    return ["model=dcn", "data=synthetic", "data.rows=20000", f"paths.root={root}", "train.max_epochs=2",
            "model.params.dropout=0", "model.params.batch_norm=false", f"train.device={device}",
            "tracking.experiment=gpu-check-ddp"]


PRECISIONS = {"fp32": [], "tf32": ["train.tf32=true"], "bf16": ["train.precision=bf16"],
              "graph": ["train.cuda_graph=true"]}
RUN_LINE = re.compile(r"test\s+AUC ([0-9.]+)\s+logloss ([0-9.]+)")
SPEED_LINE = re.compile(r"([\d,]+) samples/s")
PRECISION_SEED = 2021  # the conf's default seed


def precision_overrides(root: Path, cpu: bool, quick: bool, seed: int = PRECISION_SEED) -> list[str]:
    """DCN at its conf defaults (dropout, batch norm) on a Frappe_x1-size synthetic split, 6 epochs."""
    rows = 20000 if quick else 250000
    return ["model=dcn", "data=synthetic", f"data.rows={rows}", f"paths.root={root}", "train.max_epochs=6",
            f"seed={seed}", f"train.device={'cpu' if cpu else 'cuda'}", "tracking.experiment=gpu-check-precision"]


def precision_check(cpu: bool, quick: bool, timeout: float, seeds: int = 1, jobs: int = 1) -> Result:
    """Seeded runs per switch (fp32, train.tf32, train.precision=bf16, train.cuda_graph), ``seeds`` seeds from
    ``PRECISION_SEED`` on: test AUC and logloss against fp32's with the same seed (mean and standard error over
    the seeds), and training samples/s. Issue 14 asks for the measured effect of bf16 and TF32 on AUC; on the CPU
    TF32 and the graph change nothing (their rows must equal fp32's). ``jobs`` runs go at once (after the first,
    which prepares the shared data folder): on a GPU machine with many cores the seeds then cost little more than
    one; the samples/s are then those of runs sharing the GPU."""
    runs = [(seed, name) for seed in range(PRECISION_SEED, PRECISION_SEED + seeds) for name in PRECISIONS]
    got: dict[tuple[int, str], tuple[float, float, float]] = {}
    fails: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bars-gpu-check-precision-") as tmp:
        def one(key: tuple[int, str]) -> None:
            seed, name = key
            rc, out, _ = run([sys.executable, "-m", "bars.cli", "train",
                              *precision_overrides(Path(tmp), cpu, quick, seed), *PRECISIONS[name]], timeout)
            found, speed = RUN_LINE.findall(out), SPEED_LINE.findall(out)
            if rc != 0 or not found or not speed:
                fails.append(f"{name} seed {seed}: exit {rc}\n{tail(out)}")
                return
            got[key] = (float(found[-1][0]), float(found[-1][1]), float(speed[-1].replace(",", "")))

        one(runs[0])  # prepares the data folder the others reuse
        if not fails:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(one, runs[1:]))
    secs = time.perf_counter() - t0
    if fails:
        return Result("precision", "FAIL", fails[0], secs)
    ok, detail = precision_summary(got, sorted({s for s, _ in runs}), jobs, cpu)
    return Result("precision", "PASS" if ok else "FAIL", detail, secs)


def precision_defaults(cpu: bool, seeds: int | None, jobs: int | None) -> tuple[int, int]:
    """(seeds, jobs) of the precision row: as given, else 8 seeds, 8 at once (at most half the cores) on a GPU;
    1 and 1 on the CPU. A single seed says little: on the H200 (session 30) one seed's TF32 or bf16 difference
    was as large as fp32's own spread over seeds (sd 0.002-0.003)."""
    if seeds is None:
        seeds = 1 if cpu else 8
    if jobs is None:
        jobs = 1 if cpu else max(1, min(8, (os.cpu_count() or 2) // 2))
    return seeds, jobs


def precision_summary(got: dict[tuple[int, str], tuple[float, float, float]], seed_list: list[int], jobs: int,
                      cpu: bool) -> tuple[bool, str]:
    """(passed, the row's text) from every (seed, switch)'s (test AUC, logloss, samples/s): per switch the mean
    difference from fp32 with the same seed, its standard error over the seeds, how many seeds are within 0.001.
    On the CPU TF32 and the graph must equal fp32 exactly, seed by seed."""
    n = len(seed_list)
    auc0 = statistics.fmean(got[(s, "fp32")][0] for s in seed_list)
    sp0 = statistics.fmean(got[(s, "fp32")][2] for s in seed_list)
    parts = [f"fp32 test AUC {auc0:.5f} ({sp0:,.0f} samples/s)"]
    for name in PRECISIONS:
        if name == "fp32":
            continue
        d_auc = [got[(s, name)][0] - got[(s, "fp32")][0] for s in seed_list]
        d_ll = statistics.fmean(got[(s, name)][1] - got[(s, "fp32")][1] for s in seed_list)
        sp = statistics.fmean(got[(s, name)][2] for s in seed_list)
        within = sum(abs(d) <= 1e-3 for d in d_auc)
        se = "" if n < 2 else f" ± {statistics.stdev(d_auc) / n ** 0.5:.5f} (se)"
        parts.append(f"{name} {statistics.fmean(d_auc):+.5f}{se} AUC, {d_ll:+.5f} logloss, {within}/{n} within "
                     f"0.001 ({sp:,.0f}/s)")
    ok = not cpu or all(got[(s, n)][:2] == got[(s, "fp32")][:2] for s in seed_list for n in ("tf32", "graph"))
    many = f"{n} seeds ({seed_list[0]}-{seed_list[-1]}), {jobs} run(s) at once" if n > 1 else "one seed each"
    return ok, "; ".join(parts) + f" ({many})"


def ddp_check(cpu: bool, gpus: int, timeout: float) -> Result:
    """``bars train train.processes=2`` (torchrun, DistributedDataParallel) against one process: 2 GPUs (NCCL)
    when the machine has them, else 2 CPU processes (gloo). PASS: both runs finished and their test AUCs agree
    within ``DDP_TOLERANCE``."""
    device, where = ("cuda", "2 GPUs (NCCL)") if gpus >= 2 and not cpu else ("cpu", "2 CPU processes (gloo)")
    auc = {}
    secs = 0.0
    with tempfile.TemporaryDirectory(prefix="bars-gpu-check-ddp-") as tmp:
        for n in (2, 1):
            rc, out, s = run([sys.executable, "-m", "bars.cli", "train", *ddp_overrides(Path(tmp), device),
                              f"train.processes={n}"], timeout)
            secs += s
            found = RUN_LINE.findall(out)  # the run's summary line, as the precision row reads it
            if rc != 0 or not found:
                return Result("ddp", "FAIL", f"{n} process(es) on {device}: exit {rc}\n{tail(out)}", secs)
            auc[n] = float(found[-1][0])
    diff = abs(auc[2] - auc[1])
    note = "" if device == "cuda" else f" (this machine has {gpus} GPU(s): 2 are needed for NCCL)"
    return Result("ddp", "PASS" if diff <= DDP_TOLERANCE else "FAIL",
                  f"{where}{note}: test AUC {auc[2]:.5f} vs 1 process {auc[1]:.5f} (|diff| {diff:.1e}, "
                  f"tolerance {DDP_TOLERANCE:g})", secs)


def table(results: list[Result]) -> str:
    lines = ["| step | status | seconds | result |", "|:--|:--|---:|:--|"]
    for r in results:
        first, *rest = r.detail.splitlines() or [""]
        lines.append(f"| {r.step} | {r.status} | {r.seconds:.1f} | {first} |")
        lines += [f"    {ln}" for ln in rest]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run every step on the CPU (tests the script itself)")
    ap.add_argument("--quick", action="store_true", help="small bench sizes")
    ap.add_argument("--steps", default="cuda-tests,bench-train,sweep,packing,precision,ddp",
                    help="comma-separated subset of cuda-tests, bench-train, sweep, packing, precision, ddp")
    ap.add_argument("--timeout", type=float, default=600, help="seconds each step may take")
    ap.add_argument("--seeds", type=int, help="precision: seeds per switch, from 2021 on (default: 8 on a GPU, "
                    "1 with --cpu; one seed's difference is as large as another seed's: H200, session 30)")
    ap.add_argument("--jobs", type=int, help="precision: runs at once after the first (default: 8 on a GPU, at "
                    "most half the cores; 1 with --cpu)")
    ap.add_argument("--pack-per-worker", type=int, default=PACK_PER_WORKER,
                    help="packing: trials per packed GPU worker (the lone worker gets 2 more)")
    ap.add_argument("--logs", type=Path, help="folder for every command's whole output (<step>.log)")
    args = ap.parse_args(argv)
    global LOGS, STEP
    LOGS = args.logs
    steps = [s for s in args.steps.split(",") if s]
    known = {"cuda-tests", "bench-train", "sweep", "packing", "precision", "ddp"}
    if set(steps) - known:
        print(f"gpu-check: --steps: unknown {sorted(set(steps) - known)}; known: {sorted(known)}", file=sys.stderr)
        return 2
    bad = [f"--{k.replace('_', '-')} {v}" for k, v in (("seeds", args.seeds), ("jobs", args.jobs),
                                                        ("pack_per_worker", args.pack_per_worker))
           if v is not None and v < 1]
    if bad:
        print(f"gpu-check: {', '.join(bad)}: must be >= 1", file=sys.stderr)
        return 2
    seeds, jobs = precision_defaults(args.cpu, args.seeds, args.jobs)
    env, gpus = check_env(args.cpu)
    if not gpus and not args.cpu:
        print(table([env]))
        print("gpu-check: no CUDA device visible: run it on a GPU machine (or --cpu to exercise the script on "
              "the CPU)", file=sys.stderr)
        return 2
    results = [env]
    print(f"gpu-check: {env.detail}", file=sys.stderr, flush=True)
    done = len(results)
    for step in steps:
        t = time.perf_counter()
        STEP = step
        if step == "cuda-tests":
            results.append(cuda_tests(args.cpu, args.timeout))
        elif step == "bench-train":
            results += bench_train("cpu" if args.cpu else "cuda", args.quick, args.timeout)
        elif step == "sweep":
            results.append(sweep_check(args.cpu, len(gpus), args.timeout))
        elif step == "packing":
            results.append(packing_check(args.cpu, args.quick, args.timeout, args.pack_per_worker))
        elif step == "precision":
            results.append(precision_check(args.cpu, args.quick, args.timeout, seeds, jobs))
        else:
            results.append(ddp_check(args.cpu, len(gpus), args.timeout))
        print(f"gpu-check: {step} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        print(table(results[done:]).split("\n", 2)[2], file=sys.stderr, flush=True)  # its rows, as they come
        done = len(results)
    print(f"\ngpu-check ({'CPU mode: not a GPU check' if args.cpu else 'CUDA'}; {os.cpu_count()} cores)")
    print(table(results))
    return 0 if all(r.status in ("PASS", "N/A") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
