"""Loader: contract dtypes, checksum and schema verification, seeded slice batches; transforms; downloads."""

from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
import torch

from bars.data import transforms as T
from bars.data.download import download_file
from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.spec import SpecError


def test_load_dtypes_and_batches(movielens_folder):
    ds = load_dataset(movielens_folder)
    tr = ds.splits["train"]
    assert tr.features["user"].dtype == torch.int32 and tr.features["genres"].dim() == 2
    assert tr.label.dtype == torch.float32 and ds.fingerprint == movielens_folder.name
    seen = torch.cat([b[1] for b in tr.batches(4096, shuffle=False)])
    assert torch.equal(seen, tr.label)
    a = [y for _, y in tr.batches(1000, shuffle=True, seed=3)]
    b = [y for _, y in tr.batches(1000, shuffle=True, seed=3)]
    c = [y for _, y in tr.batches(1000, shuffle=True, seed=4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    users = torch.cat([f["user"] for f, _ in tr.batches(777, shuffle=True, seed=1)])
    assert torch.equal(users.sort().values, tr.features["user"].sort().values)  # each row once


def test_checksum_and_schema_mismatch(movielens_folder, tmp_path):
    bad = tmp_path / "copy"
    shutil.copytree(movielens_folder, bad)
    with open(bad / "test.parquet", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match=r"test.parquet: sha256 mismatch"):
        load_dataset(bad)
    shutil.copy(movielens_folder / "test.parquet", bad / "test.parquet")
    pl.read_parquet(bad / "valid.parquet").with_columns(pl.col("user").cast(pl.Int64)).write_parquet(bad / "valid.parquet")
    with pytest.raises(SpecError, match=r"column 'user' \(categorical\) has type int64, expected int32"):
        load_dataset(bad, verify=False)
    with pytest.raises(DataError, match="no manifest.json"):
        load_dataset(tmp_path)


def test_vocab_order_and_encoding():
    lf = pl.DataFrame({"c": ["b", "a", "b", "c", "a", "d", None]}).lazy()
    vocab = T.vocab_query(lf, "c", min_count=2).collect()["c"]
    assert vocab.to_list() == ["a", "b"]  # equal counts -> by value
    df = pl.DataFrame({"c": ["a", "b", "z", None]})
    assert df.select(T.encode_categorical("c", vocab, missing="oov"))["c"].to_list() == [2, 3, 1, 1]  # FuxiCTR
    assert df.select(T.encode_categorical("c", vocab, missing="padding"))["c"].to_list() == [2, 3, 1, 0]
    with pytest.raises(ValueError, match="missing rule"):
        T.encode_categorical("c", vocab, missing="zero")


def test_criteo_bucket(monkeypatch):
    out = pl.DataFrame({"I": [None, -1, 0, 1, 2, 3, 100]}).select(T.criteo_bucket("I"))["I"].to_list()
    assert out == [0, -1, 0, 1, 2, int(np.floor(np.log(3) ** 2)), int(np.floor(np.log(100) ** 2))]
    # the table (values below BUCKET_TABLE_SIZE) and the formula (the rest) agree with the formula everywhere,
    # around the table's edge and on every bucket boundary below it
    n = T.BUCKET_TABLE_SIZE
    xs = np.concatenate([np.arange(-3, n + 3), np.array([2**31, 2**40, -(2**40), 2**63 - 1, -(2**63)]),
                         np.ceil(np.exp(np.sqrt(np.arange(1, 200)))).astype(np.int64)])
    df = pl.DataFrame({"I": pl.Series(list(xs) + [None, 5], dtype=pl.Int64)})
    got = df.select(T.criteo_bucket("I"))["I"]
    assert got.dtype == pl.Int64 and got.null_count() == 0
    assert got.to_list() == df.select(T._criteo_bucket_formula(pl.col("I").fill_null(0)))["I"].to_list()
    # every bucket bound above the table, and the values just below it, with and without the compiled pass
    _, bounds, _ = T._bucket_table()
    assert len(bounds) > 1500 and np.all(np.diff(bounds) >= 0)
    edge = pl.DataFrame({"I": np.concatenate([bounds - 1, bounds, bounds + 1])})
    want = edge.select(T._criteo_bucket_formula(pl.col("I")))["I"].to_list()
    assert edge.select(T.criteo_bucket("I"))["I"].to_list() == want
    monkeypatch.setenv("BARS_READER", "arrow")  # the numpy path
    assert edge.select(T.criteo_bucket("I"))["I"].to_list() == want
    assert df.select(T.criteo_bucket("I"))["I"].to_list() == got.to_list()
    monkeypatch.delenv("BARS_READER")
    # as the recipe uses it, in with_columns over several fields of a frame of several chunks
    two = pl.concat([df.with_columns(J=pl.col("I") * -1), df.with_columns(J=pl.col("I"))], rechunk=False)
    both = two.with_columns([T.criteo_bucket(c) for c in ("I", "J")])
    assert both.equals(two.select([T._criteo_bucket_formula(pl.col(c).fill_null(0)).alias(c) for c in ("I", "J")]))


def test_assign_split_is_batch_independent():
    whole = T.assign_split(0, 10_000, 7, (0.8, 0.1, 0.1))
    parts = np.concatenate([T.assign_split(s, 1000, 7, (0.8, 0.1, 0.1)) for s in range(0, 10_000, 1000)])
    assert np.array_equal(whole, parts)
    assert abs((whole == 0).mean() - 0.8) < 0.02 and not np.array_equal(whole, T.assign_split(0, 10_000, 8, (8, 1, 1)))


class _RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; drops the first response after ``cut`` bytes."""

    cut: ClassVar[dict] = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        data = Path(path).read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut.get("n"):
            n = self.cut.pop("n")
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(root)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_resume_and_verify(http_dir, tmp_path):
    import hashlib

    root, url = http_dir
    blob = np.random.default_rng(0).bytes(3 << 20)
    (root / "f.bin").write_bytes(blob)
    md5 = hashlib.md5(blob).hexdigest()
    dest = tmp_path / "dl" / "f.bin"
    _RangeHandler.cut["n"] = 1 << 20
    with pytest.raises(DataError, match="rerun to resume"):
        download_file(f"{url}/f.bin", dest, md5=md5, progress=False)
    part = dest.with_name("f.bin.part")
    assert part.exists() and not dest.exists() and part.stat().st_size == 1 << 20
    assert download_file(f"{url}/f.bin", dest, md5=md5, progress=False) == dest  # resumed via Range
    assert dest.read_bytes() == blob and not part.exists()
    with pytest.raises(DataError, match="md5 mismatch"):
        download_file(f"{url}/f.bin", tmp_path / "x.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.part").exists()


def test_checksums_hashed_once_then_stamped(movielens_folder, tmp_path, monkeypatch):
    """loader.verify=stamp (default): a split is hashed on its first load, then trusted while its size, mtime and
    inode are unchanged; verify=full hashes every time; a changed file is hashed (and caught) again."""
    import contextlib
    import json
    import os

    from bars.data import loader

    folder = tmp_path / "copy"
    shutil.copytree(movielens_folder, folder)
    (folder / loader.VERIFIED).unlink(missing_ok=True)
    hashed: list[str] = []
    real = loader.file_digest
    monkeypatch.setattr(loader, "file_digest", lambda p, *a, **k: hashed.append(Path(p).name) or real(p, *a, **k))

    load_dataset(folder)
    assert sorted(hashed) == ["test.parquet", "train.parquet", "valid.parquet"]
    stamps = json.loads((folder / loader.VERIFIED).read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert stamps["test.parquet"][-1] == manifest["splits"]["test"]["sha256"]
    hashed.clear()
    load_dataset(folder)  # stamped: no hashing
    assert hashed == []
    load_dataset(folder, verify="full")
    assert len(hashed) == 3
    hashed.clear()
    load_dataset(folder, verify=False)
    assert hashed == []

    # the same size and mtime restored after an in-place edit: trusted by the stamp, caught by verify=full
    p = folder / "test.parquet"
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(p, "r+b") as f:
        f.write(data)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed.clear()
    with contextlib.suppress(Exception):  # parquet itself may reject the flipped byte
        load_dataset(folder)
    assert hashed == []  # trusted by its stamp: the documented limit of verify=stamp
    with pytest.raises(DataError, match="test.parquet: sha256 mismatch"):
        load_dataset(folder, verify="full")
    # any other change (size, mtime or a new file) is hashed again on a stamped load, and caught
    with open(p, "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="test.parquet: sha256 mismatch"):
        load_dataset(folder)
    shutil.copy(movielens_folder / "test.parquet", p)
    hashed.clear()
    load_dataset(folder)
    assert hashed == ["test.parquet"]
    with pytest.raises(DataError, match="loader.verify must be one of"):
        load_dataset(folder, verify="quick")


def test_numpy_views_equal_to_numpy_for_every_split_dtype():
    """``bars.data.loader._numpy`` (a buffer view, without pyarrow's pandas import) gives what ``to_numpy`` gives:
    every dtype a split holds, sliced arrays (an offset into the buffer), list values; nulls and other types go
    through ``to_numpy``."""
    import pyarrow as pa

    from bars.data.loader import _numpy

    cases = [pa.array([1, -2, 3, 4, 5], pa.int32()), pa.array([1, 2, 2**40], pa.int64()),
             pa.array([0.5, -1.5, 2.25], pa.float32()), pa.array([0.1, 0.2], pa.float64()),
             pa.array([1, 2, 3, 4, 5], pa.int32()).slice(2, 3), pa.array([0.5, 1.5, 2.5], pa.float32()).slice(1),
             pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int32())).slice(1).flatten(),
             pa.array([1.0, None, 3.0], pa.float32()), pa.array([True, False]), pa.array([1, 2], pa.int16())]
    for arr in cases:
        got, want = _numpy(arr), arr.to_numpy(zero_copy_only=False)
        assert got.dtype == want.dtype and got.shape == want.shape, arr.type
        np.testing.assert_array_equal(got, want)
    assert _numpy(cases[4]).tolist() == [3, 4, 5] and _numpy(cases[6]).tolist() == [3, 4, 5, 6]
