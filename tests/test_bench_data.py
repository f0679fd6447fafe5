"""`bars bench data`: size parsing and the free-disk check run before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bars.benchmarks import data as bench


def test_disk_check_refuses_a_size_that_does_not_fit(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    rows = free // 100 + 1  # > free / (stage + parquet) bytes per row even when the raw file already exists
    with pytest.raises(SystemExit, match=r"need about .* GiB of free disk under .*--workdir"):
        bench.check_disk(tmp_path / "w", rows, raw_exists=True)
    assert not list((tmp_path / "w").iterdir())  # nothing written
    bench.check_disk(tmp_path / "w", 1000, raw_exists=False)  # a small size passes


def test_disk_needed_counts_the_raw_text_only_when_it_must_be_generated():
    n = 45_000_000
    assert bench.disk_needed(n, raw_exists=False) - bench.disk_needed(n, raw_exists=True) == n * bench.BYTES_PER_ROW["raw"]


@pytest.mark.parametrize("rows, message", [("1e6", "expected comma-separated whole numbers"),
                                           ("10", "at least 1,000 rows"), (",", "at least 1,000 rows")])
def test_bad_rows_are_refused(monkeypatch, capsys, tmp_path, rows, message):
    monkeypatch.setattr(sys, "argv", ["bench-data", "--rows", rows, "--workdir", str(tmp_path)])
    assert bench.main() == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM needs /proc")
def test_peak_rss_is_the_prepare_process_own_not_the_bench_process():
    """wait4's ru_maxrss of a child counts the parent's memory at the spawn (Linux keeps the high-water mark across
    exec); the child's own VmHWM does not."""
    ballast = bytearray(400 * 2**20)  # the bench process after generating a big file
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    proc = subprocess.Popen([sys.executable, "-c", bench.CHILD, "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0 and bench.PEAK_MARK in err
    own = bench.child_peak_mib(err, usage)
    assert 1 < own < 300 < usage.ru_maxrss / 1024  # the ballast shows in wait4's figure only
    assert bench.child_peak_mib("no mark", usage) == usage.ru_maxrss / 1024
    del ballast


def test_generator_cardinalities(tmp_path):
    """The default file's values are 32-bit ids in 8 hex digits from small per-field tables; ``criteo`` draws each
    field uniformly from Kaggle Criteo's number of values (deterministic per seed), and nothing else is taken."""
    import numpy as np
    import pyarrow.csv as pacsv

    from bars.data import synthetic

    x = np.random.default_rng(0).integers(0, 2**32, size=5000, dtype=np.uint64).astype(np.uint32)
    assert synthetic._hex8(x).to_pylist() == [f"{v:08x}" for v in x.tolist()]

    def columns(path):
        t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                           parse_options=pacsv.ParseOptions(delimiter="\t"),
                           convert_options=pacsv.ConvertOptions(column_types={f"f{i}": "string" for i in range(14, 40)}))
        return {f"C{i - 13}": [v for v in t.column(f"f{i}").to_pylist() if v] for i in range(14, 40)}  # "": missing

    default = columns(synthetic.generate_criteo(tmp_path / "d.txt", 4000, 1))
    criteo = columns(synthetic.generate_criteo(tmp_path / "c.txt", 4000, 1, cardinality="criteo"))
    again = synthetic.generate_criteo(tmp_path / "c2.txt", 4000, 1, cardinality="criteo")
    assert again.read_bytes() == (tmp_path / "c.txt").read_bytes()
    assert len(set(default["C3"])) < 40 and len(set(criteo["C3"])) > 3500  # 21 values against 10.1M
    assert len(set(criteo["C9"])) <= 3 and len(set(criteo["C20"])) <= 4
    assert all(len(v) == 8 and int(v, 16) >= 0 for vals in criteo.values() for v in vals)
    with pytest.raises(ValueError, match="cardinality 'avazu': expected one of synthetic, criteo"):
        synthetic.generate_criteo(tmp_path / "a.txt", 10, cardinality="avazu")
    assert not (tmp_path / "a.txt").exists()


def test_min_count_reaches_the_prepare_and_the_table(monkeypatch, capsys, tmp_path):
    """``--min-count`` is the prepare's ``data.min_count`` (a real prepare of 2,000 rows: the vocabulary files it
    writes keep only values seen that often) and the table says which threshold it ran with; a bad one is refused
    before anything is written."""
    monkeypatch.setattr(sys, "argv", ["bench-data", "--rows", "2000", "--workdir", str(tmp_path), "--min-count", "0"])
    assert bench.main() == 2 and "--min-count 0: expected a whole number >= 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())

    raw, data_dir = tmp_path / "raw", tmp_path / "d"
    from bars.data.synthetic import generate_criteo

    generate_criteo(raw / "synthetic_criteo_2000_0.txt", 2000, 0)
    assert bench.prepare_command(2000, raw, data_dir, None)[-1] == f"paths.data={data_dir}"
    cmd = bench.prepare_command(2000, raw, data_dir, 40)
    assert cmd[-1] == "data.min_count=40"
    subprocess.run(cmd, check=True, capture_output=True)
    import polars as pl

    vocab = next(data_dir.glob("synthetic/*/vocab/C1.parquet"))
    counts = pl.read_parquet(vocab)["count"]
    assert len(counts) > 0 and counts.min() >= 40

    monkeypatch.setattr(sys, "argv", ["bench-data", "--rows", "2000", "--workdir", str(tmp_path / "w"),
                                      "--min-count", "3"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert "min_count 3" in out and "goal peak < 1.5 GB" in out
    assert out.strip().splitlines()[-1].endswith("| met |")  # 2,000 rows: far under 1.5 GB
