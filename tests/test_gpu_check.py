"""scripts/gpu-check's own paths, on the CPU: it refuses to pretend without a GPU, reads pytest's and the bench's
output, judges a sweep's placement from its Optuna trials; the slow test runs every step end to end with --cpu."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from bars.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
GC = sys.modules["gpu_check_script"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(GC)

BENCH_OUT = """bars bench train: torch 2.13.0+cpu, cpu, 2 CPU threads, 2 cores, load average 3.0 at start
Criteo shape: 39 categorical fields, 2,553,881 embedding rows (largest table 1,000,000), 8,192 rows/epoch
model                       params    train/s  train/cpu-s     step/s     valid/s   secs
dcn @ Criteo shape      26,021,161        515        2,549        682       9,365  108.8
dcn @ Frappe_x1 best       418,601        752        3,745        927       8,918   58.1
deepfm @ Frappe_x1          60,001     12,001       10,000     20,000      90,000    1.5

DCN Frappe_x1 best: 752 training samples/s (goal 30,000: NOT met)
"""


def test_bench_table_rows_are_read():
    rows = GC.parse_bench_train(BENCH_OUT)
    assert [r["name"] for r in rows] == ["dcn @ Criteo shape", "dcn @ Frappe_x1 best", "deepfm @ Frappe_x1"]
    assert rows[0]["params"] == 26_021_161 and rows[0]["train_per_s"] == 515 and rows[0]["seconds"] == 108.8
    assert rows[2]["valid_per_s"] == 90_000 and rows[2]["step_per_s"] == 20_000


def test_pytest_summary_is_read():
    out = "....s\n=== short test summary ===\n2 failed, 40 passed, 3 skipped, 900 deselected in 12.3s\n"
    assert GC.parse_pytest(out) == {"passed": 40, "failed": 2, "skipped": 3, "error": 0}
    assert GC.parse_pytest("no tests ran") == {"passed": 0, "failed": 0, "skipped": 0, "error": 0}


def test_sweep_placement_is_judged():
    two_on_one = [("COMPLETE", "cuda:0", "h:1"), ("COMPLETE", "cuda:0", "h:2"), ("COMPLETE", "cuda:1", "h:3")]
    ok, detail = GC.judge_sweep(two_on_one, cpu=False)
    assert ok and "3/3 trials finished" in detail and "cuda:0: 2 worker(s)" in detail
    assert not GC.judge_sweep([("COMPLETE", "cuda:0", "h:1"), ("COMPLETE", "cuda:1", "h:2")], cpu=False)[0]
    assert not GC.judge_sweep([("FAIL", "cuda:0", "h:1"), ("COMPLETE", "cuda:0", "h:2")], cpu=False)[0]
    assert not GC.judge_sweep([("COMPLETE", "cpu", "h:1"), ("COMPLETE", "cpu", "h:2")], cpu=False)[0]
    assert GC.judge_sweep([("COMPLETE", "cpu", "h:1"), ("PRUNED", "cpu", "h:2")], cpu=True)[0]
    assert not GC.judge_sweep([], cpu=True)[0]


def test_sweep_overrides_pack_two_workers_per_gpu(tmp_path):
    gpu = GC.sweep_overrides(tmp_path, cpu=False, gpus=3)
    # 6 trials per worker on a GPU: with fewer, the first worker finished them all on the first H200 run
    assert "sweep.workers_per_gpu=2" in gpu and "sweep.trials=36" in gpu and f"paths.root={tmp_path}" in gpu
    cpu = GC.sweep_overrides(tmp_path, cpu=True, gpus=0)
    assert {"sweep.devices=cpu", "sweep.workers=2", "sweep.trials=4"} <= set(cpu)


def test_packing_sweeps_one_against_eight_workers_on_gpu_0(tmp_path):
    one = GC.packing_overrides(tmp_path, cpu=False, workers=1, quick=False)
    eight = GC.packing_overrides(tmp_path, cpu=False, workers=GC.PACK_WORKERS, quick=False)
    assert {"sweep.devices=[0]", "sweep.workers_per_gpu=1", "sweep.trials=6"} <= set(one)
    assert {"sweep.devices=[0]", "sweep.workers_per_gpu=8", "sweep.trials=32"} <= set(eight)
    assert {"data.rows=250000", "train.max_epochs=8"} <= set(eight)  # a Frappe_x1-size training split (80%)
    assert {"sweep.devices=cpu", "sweep.workers=2"} <= set(GC.packing_overrides(tmp_path, cpu=True, workers=2,
                                                                                 quick=True))


def test_unknown_steps_are_refused(capsys):
    assert GC.main(["--cpu", "--steps", "sweep,warp"]) == 2
    assert "unknown ['warp']" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_it_runs_nothing_and_says_so():
    r = subprocess.run([str(PROJECT_ROOT / "scripts" / "gpu-check")], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 2
    assert "| env | FAIL |" in r.stdout and "no CUDA device visible" in r.stderr


@pytest.mark.slow
def test_every_step_runs_on_the_cpu():
    """The whole script in --cpu mode: the CUDA tests run (and skip), bench-train runs DCN/DeepFM/DNN at both
    shapes, a real 2-worker sweep on synthetic data completes and its trials record the CPU, the packing sweeps
    and the precision runs finish (TF32 and the CUDA graph equal fp32 on the CPU), DDP agrees with one process."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--quick"], capture_output=True, text=True,
                       timeout=1800, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for row in ("| cuda-tests | PASS |", "| bench-train dcn @ Frappe_x1 best | PASS |",
                "| bench-train dnn @ Criteo shape | PASS |", "| sweep | PASS |", "| packing | PASS |",
                "| precision | PASS |", "| ddp | PASS |"):
        assert row in r.stdout
    assert "4/4 trials finished; cpu: 2 worker(s)" in r.stdout


def test_precision_runs_name_each_switch(tmp_path):
    assert GC.PRECISIONS == {"fp32": [], "tf32": ["train.tf32=true"], "bf16": ["train.precision=bf16"],
                             "graph": ["train.cuda_graph=true"]}
    gpu = GC.precision_overrides(tmp_path, cpu=False, quick=False)
    assert {"model=dcn", "data.rows=250000", "train.device=cuda", f"paths.root={tmp_path}"} <= set(gpu)
    assert "train.device=cpu" in GC.precision_overrides(tmp_path, cpu=True, quick=True)
    m = GC.RUN_LINE.findall("  test  AUC 0.77115   logloss 0.51480\n")
    assert m == [("0.77115", "0.51480")]


def test_precision_seeds_are_summarised_against_fp32_with_the_same_seed(tmp_path):
    assert "seed=2030" in GC.precision_overrides(tmp_path, cpu=False, quick=False, seed=2030)
    got = {}
    for seed, base in ((2021, 0.770), (2022, 0.780)):
        got[(seed, "fp32")] = (base, 0.50, 100.0)
        got[(seed, "tf32")] = (base + 0.002, 0.49, 100.0)  # +0.002 on both seeds: mean +0.002, se 0
        got[(seed, "graph")] = (base, 0.50, 300.0)
    got[(2021, "bf16")] = (0.770 + 0.0005, 0.50, 200.0)
    got[(2022, "bf16")] = (0.780 - 0.0025, 0.51, 200.0)  # mean -0.001, se 0.0015
    ok, text = GC.precision_summary(got, [2021, 2022], jobs=4, cpu=False)
    assert ok
    assert "fp32 test AUC 0.77500" in text
    assert "tf32 +0.00200 ± 0.00000 (se) AUC, -0.01000 logloss, 0/2 within 0.001" in text
    assert "bf16 -0.00100 ± 0.00150 (se) AUC, +0.00500 logloss, 1/2 within 0.001 (200/s)" in text
    assert "graph +0.00000 ± 0.00000 (se) AUC" in text and "(2 seeds (2021-2022), 4 run(s) at once)" in text
    # on the CPU TF32 must change nothing: the +0.002 fails the row; with one seed no standard error is printed
    assert not GC.precision_summary(got, [2021, 2022], jobs=1, cpu=True)[0]
    ok1, one = GC.precision_summary(got, [2021], jobs=1, cpu=False)
    assert ok1 and "(se)" not in one and one.endswith("(one seed each)")


def test_packing_trials_per_worker_can_be_raised(tmp_path):
    assert GC.pack_trials(cpu=False, workers=8, per_worker=8) == 64
    assert GC.pack_trials(cpu=False, workers=1, per_worker=8) == 10
    assert "sweep.trials=64" in GC.packing_overrides(tmp_path, cpu=False, workers=8, quick=False, per_worker=8)
    assert GC.pack_trials(cpu=True, workers=2, per_worker=8) == 4  # the CPU mode keeps its small sweeps


def test_precision_defaults_to_eight_seeds_on_a_gpu_and_one_on_the_cpu():
    assert GC.precision_defaults(cpu=True, seeds=None, jobs=None) == (1, 1)
    seeds, jobs = GC.precision_defaults(cpu=False, seeds=None, jobs=None)
    assert seeds == 8 and 1 <= jobs <= 8
    assert GC.precision_defaults(cpu=False, seeds=24, jobs=3) == (24, 3)


def test_counts_below_one_are_refused_before_anything_runs(capsys):
    assert GC.main(["--cpu", "--steps", "sweep", "--seeds", "0", "--pack-per-worker", "-1"]) == 2
    assert "--seeds 0, --pack-per-worker -1: must be >= 1" in capsys.readouterr().err
