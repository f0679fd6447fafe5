"""The prepared bytes depend on the data and the config only, never on how the engine batches its work: a guard
for speed work on the data engine (bars.data.engine), which must leave every output byte unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from bars.data import engine, sources
from bars.data.recipes import criteo_recipe
from bars.data.synthetic import generate_criteo
from bars.fileio import file_digest


def _build(raw: Path, out: Path, rows: int) -> dict[str, str]:
    data = {"name": "synthetic", "integer_mode": "bucket", "min_count": 2, "split_seed": 2021, "rows": rows,
            "split_ratios": [0.8, 0.1, 0.1], "missing": "oov"}
    out.mkdir()
    manifest = engine.build(criteo_recipe(data, raw.parent, raw_file=raw), out, "fp")
    digests = {p.relative_to(out).as_posix(): file_digest(p, "sha256") for p in sorted(out.rglob("*"))
               if p.is_file() and p.name != "manifest.json"}
    digests["manifest.splits"] = json.dumps(manifest["splits"], sort_keys=True)
    return digests


def test_batch_sizes_do_not_change_a_byte(tmp_path, monkeypatch):
    rows = 20_000
    raw = generate_criteo(tmp_path / "raw" / "criteo.txt", rows, seed=3)
    default = _build(raw, tmp_path / "default", rows)
    monkeypatch.setattr(sources, "BLOCK_SIZE", 1 << 16)  # parse blocks of ~250 rows
    monkeypatch.setattr(sources, "BATCH_ROWS", 1 << 10)  # combined into ~20 batches instead of one
    small = _build(raw, tmp_path / "small", rows)
    assert len(default) > 40 and small == default
    assert json.loads(default["manifest.splits"])["train"]["rows"] > 15_000


def test_narrow_staging_and_small_native_blocks_do_not_change_a_byte(tmp_path, monkeypatch):
    """Staged integers in their narrowest type (bars.data.staging) and the native reader's pipeline over many
    small blocks (tokenized on one thread, interned on another) give the bytes of wide staging in one block."""
    from bars.data import native, staging

    rows = 20_000
    raw = generate_criteo(tmp_path / "raw" / "criteo.txt", rows, seed=5)
    default = _build(raw, tmp_path / "default", rows)
    monkeypatch.setattr(staging, "_LADDERS", {})  # every staged column in its first batch's type
    wide = _build(raw, tmp_path / "wide", rows)
    monkeypatch.undo()
    monkeypatch.setattr(native, "CHUNK_BYTES", 1 << 15)  # ~130 rows a block: ~150 blocks through the pipeline
    small = _build(raw, tmp_path / "small", rows)
    assert len(default) > 40 and wide == default and small == default
