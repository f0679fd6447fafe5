"""A full disk while writing the dataset splits or a checkpoint: a clear error naming the file, nothing
half-written (no partial dataset folder, no temporary, no partial checkpoint), no MLflow run left RUNNING, and
the same command succeeds once there is space.

Two ways to fill the disk: a real size-limited filesystem (a tmpfs of a few hundred KiB mounted by the test,
where this process may mount one: root with CAP_SYS_ADMIN, as on the project's machine), and ENOSPC injected at
the write (everywhere: the library call that writes raises ``OSError(ENOSPC)``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from _reliability import tiny_args, tiny_csv
from mlflow.tracking import MlflowClient

from bars.config import compose
from bars.data.prepare import prepare
from bars.fileio import DiskFullError
from bars.run import train_one


@contextlib.contextmanager
def small_fs(where: Path, size: str = "256k"):
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the ENOSPC-injection tests cover it")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill ``folder``'s filesystem so that about ``leave`` bytes stay free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _cfg(tmp_path, *extra):
    root = tmp_path / "project"
    csv = tiny_csv(tmp_path / "tiny.csv", n=3000)
    return compose(tiny_args(root, csv, *extra)), root


def _check_prepare_fails_cleanly(cfg, data_dir: Path, before: list[str]):
    with pytest.raises(DiskFullError) as e:
        prepare(cfg, quiet=True)
    msg = str(e.value)
    assert "no space left on device" in msg and str(data_dir) in msg, msg
    after = [p for p in _everything(data_dir) if not p.startswith(".locks") and not (data_dir / p).is_dir()]
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"  # (empty folders aside)


def test_splits_on_a_full_filesystem(tmp_path):
    with small_fs(tmp_path / "fs") as fs:
        cfg, _ = _cfg(tmp_path, f"paths.data={fs / 'data'}")
        (fs / "data").mkdir()
        filler = _fill(fs, leave=24 << 10)
        _check_prepare_fails_cleanly(cfg, fs / "data", [])
        filler.unlink()
        folder = prepare(cfg, quiet=True)
        assert (folder / "manifest.json").is_file() and (folder / "train.parquet").is_file()


def test_splits_with_enospc_injected(tmp_path, monkeypatch):
    import polars as pl

    cfg, root = _cfg(tmp_path)
    real = pl.LazyFrame.sink_parquet
    calls = []

    def full(self, path, *a, **kw):
        calls.append(path)
        if len(calls) == 2:  # the second split: the first one is already on disk in the temporary folder
            Path(path).write_bytes(b"PAR1 half")  # part of the file reached the disk, as on a real full disk
            # the error polars raises when its writer meets a full disk (its text, checked on a tmpfs)
            raise pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: "
                                             "No space left on device (os error 28)")
        return real(self, path, *a, **kw)

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", full)
    (root / "data").mkdir(parents=True)
    _check_prepare_fails_cleanly(cfg, root / "data", [])
    assert len(calls) >= 2  # the splits are written in parallel: a third may have started
    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", real)
    assert (prepare(cfg, quiet=True) / "manifest.json").is_file()


def _check_train_fails_cleanly(cfg, root: Path, ckpts: Path):
    with pytest.raises(DiskFullError) as e:
        train_one(cfg, quiet=True)
    assert "no space left on device" in str(e.value) and str(ckpts) in str(e.value)
    assert not [p for p in ckpts.rglob("*") if p.is_file() and p.name != "filler"], "a checkpoint file was left"
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_checkpoint_on_a_full_filesystem(tmp_path):
    with small_fs(tmp_path / "fs", size="256k") as fs:
        cfg, root = _cfg(tmp_path, f"paths.checkpoints={fs / 'ckpt'}", "model.params.dnn_hidden_units=[64,64]")
        prepare(cfg, quiet=True)
        _fill(fs, leave=8 << 10)
        _check_train_fails_cleanly(cfg, root, fs)
        (fs / "filler").unlink()
        assert train_one(cfg, quiet=True).checkpoint is not None


def test_checkpoint_with_enospc_injected(tmp_path, monkeypatch):
    import torch

    cfg, root = _cfg(tmp_path)
    real = torch.save

    def full(obj, f, *a, **kw):  # half the bytes reach the file, then the disk is full
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", getattr(f, "name", str(f)))

    monkeypatch.setattr(torch, "save", full)
    _check_train_fails_cleanly(cfg, root, root / "checkpoints")
    monkeypatch.setattr(torch, "save", real)
    assert train_one(cfg, quiet=True).checkpoint is not None
