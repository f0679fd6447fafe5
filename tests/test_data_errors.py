"""Bad inputs: each error names the file and line (or key) and what was expected, leaves no output behind,
and a rerun after the fix works."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from bars.data.errors import DataError
from bars.data.prepare import prepare


def _no_output(tmp_path: Path, name: str) -> None:
    d = tmp_path / "data" / name
    assert not d.exists() or list(d.iterdir()) == [], list(d.iterdir())


def _criteo_lines(shared_datasets: Path, n: int = 300) -> list[str]:
    with gzip.open(shared_datasets / "criteo_head10k" / "raw" / "train.txt.gz", "rt") as f:
        return [next(f) for _ in range(n)]


def _write(raw: Path, lines: list[str], gz: bool = False) -> Path:
    raw.mkdir(exist_ok=True)
    p = raw / ("train.txt.gz" if gz else "train.txt")
    data = "".join(lines).encode()
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "case,edit,expect",
    [
        ("extra column", lambda ls: ls.__setitem__(41, ls[41].rstrip("\n") + "\tzz\n"), ":42: found 41 columns, expected 40"),
        ("missing column", lambda ls: ls.__setitem__(41, ls[41].split("\t", 1)[1]), ":42: found 39 columns, expected 40"),
        ("non-numeric int", lambda ls: ls.__setitem__(7, "0\tabc" + ls[7][ls[7].index("\t", 2):]),
         ":8: column 'I1': expected an integer or empty, got 'abc'"),
        ("label not 0/1", lambda ls: ls.__setitem__(99, "2" + ls[99][1:]), ":100: label 'label' is 2.0: expected 0 or 1"),
    ],
)
def test_bad_criteo_rows(data_cfg, tmp_path, shared_datasets, case, edit, expect, gz):
    good = _criteo_lines(shared_datasets)
    bad = list(good)
    edit(bad)
    raw = tmp_path / "raw"
    p = _write(raw, bad, gz)
    cfg = data_cfg("data=criteo_x4_001", f"data.raw_dir={raw}")
    with pytest.raises(DataError) as e:
        prepare(cfg, quiet=True)
    assert str(p) + expect in str(e.value), str(e.value)
    _no_output(tmp_path, "criteo_x4_001")
    _write(raw, good, gz)  # fixed: a rerun works
    assert (prepare(cfg, quiet=True) / "manifest.json").exists()


def test_empty_file(data_cfg, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"train.txt: the file is empty: expected data rows"):
        prepare(data_cfg("data=criteo_x4_001", f"data.raw_dir={raw}"), quiet=True)
    _no_output(tmp_path, "criteo_x4_001")


def test_header_only_csv(data_cfg, tmp_path):
    (tmp_path / "a.csv").write_text("label,x\n")
    with pytest.raises(DataError, match=r"a.csv: no data rows"):
        prepare(data_cfg("data=tabular", f"data.file={tmp_path / 'a.csv'}", "data.categorical=[x]"), quiet=True)
    _no_output(tmp_path, "tabular")


def test_truncated_gzip(data_cfg, tmp_path, shared_datasets):
    raw = tmp_path / "raw"
    raw.mkdir()
    blob = (shared_datasets / "criteo_head10k" / "raw" / "train.txt.gz").read_bytes()
    (raw / "train.txt.gz").write_bytes(blob[: len(blob) // 2])
    cfg = data_cfg("data=criteo_x4_001", f"data.raw_dir={raw}")
    with pytest.raises(DataError, match=r"train.txt.gz: .*truncated or corrupt.*expected a complete gzip file"):
        prepare(cfg, quiet=True)
    _no_output(tmp_path, "criteo_x4_001")
    (raw / "train.txt.gz").write_bytes(blob)
    assert prepare(cfg, quiet=True).is_dir()


def test_checksum_mismatch(data_cfg, tmp_path, shared_datasets):
    """Official-layout files whose md5 is not the published one are refused before use."""
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = _criteo_lines(shared_datasets, 60)
    header = "label," + ",".join([f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]) + "\n"
    for k in ("train", "valid", "test"):
        (raw / f"{k}.csv").write_text(header + "".join(l.replace("\t", ",") for l in lines))
    cfg = data_cfg("data=criteo_x4_001", f"data.raw_dir={raw}")
    with pytest.raises(DataError, match=r"train.csv: md5 checksum mismatch: expected 4a53bb7cbc0e4ee25f9d6a73ed824b1a"):
        prepare(cfg, quiet=True)
    _no_output(tmp_path, "criteo_x4_001")
    assert prepare(data_cfg("data=criteo_x4_001", f"data.raw_dir={raw}", "data.verify_md5=false"), quiet=True).is_dir()


def test_unknown_dataset_name_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bars.cli", "prepare", "data=nope", f"paths.data={tmp_path}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode != 0
    assert "nope" in r.stderr and "movielens_small" in r.stderr  # names what exists
    assert not any(tmp_path.iterdir())


def test_unknown_dataset_in_config(data_cfg):
    with pytest.raises(DataError, match=r"unknown dataset 'nope'.*available: .*movielens_small"):
        prepare(data_cfg("data=movielens_small", "data.name=nope"), quiet=True)


def test_bad_input_cli_exits_nonzero(tmp_path, shared_datasets):
    raw = tmp_path / "raw"
    lines = _criteo_lines(shared_datasets, 50)
    lines[9] = "7" + lines[9][1:]
    _write(raw, lines)
    r = subprocess.run([sys.executable, "-m", "bars.cli", "prepare", "data=criteo_x4_001", f"data.raw_dir={raw}",
                        f"paths.data={tmp_path / 'data'}"], capture_output=True, text=True, check=False)
    assert r.returncode == 1, r.stderr
    assert f"{raw / 'train.txt'}:10: label 'label' is 7.0: expected 0 or 1" in r.stderr
    _no_output(tmp_path, "criteo_x4_001")


def test_tabular_config_errors(data_cfg, tmp_path):
    with pytest.raises(DataError, match=r"no input: set data.file"):
        prepare(data_cfg("data=tabular", "data.categorical=[a]"), quiet=True)
    with pytest.raises(DataError, match=r"no features"):
        prepare(data_cfg("data=tabular", "data.file=x.csv"), quiet=True)
    (tmp_path / "a.csv").write_text("label,x\n1,a\n")
    with pytest.raises(DataError, match=r"columns \['y'\] not found"):
        prepare(data_cfg("data=tabular", f"data.file={tmp_path / 'a.csv'}", "data.categorical=[y]"), quiet=True)
