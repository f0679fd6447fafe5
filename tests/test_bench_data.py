"""`bars bench data`: size parsing and the free-disk check run before anything is written."""

from __future__ import annotations

import shutil
import sys

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
