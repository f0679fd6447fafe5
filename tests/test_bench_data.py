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
