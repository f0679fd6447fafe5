"""Fixtures of the reference suite: real Frappe_x1 rows from ../shared, encoded as the project encodes them.

Without ../shared the tests that need data skip with the reason, unless BARS_REQUIRE_REFERENCE=1 (CI), where
they fail."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bars.data.spec import Feature, FeatureSpec

ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    for cand in (os.environ.get("BARS_SHARED"), ROOT.parent / "shared", "/work/shared"):
        if cand and Path(cand, "datasets").is_dir():
            return Path(cand)
    return None


def frappe_valid_csv() -> Path | None:
    s = shared_dir()
    p = s / "datasets" / "frappe_x1" / "derived" / "valid.csv.gz" if s else None
    return p if p is not None and p.is_file() else None


def require_or_skip(reason: str) -> None:
    if os.environ.get("BARS_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"BARS_REQUIRE_REFERENCE=1 but {reason}")
    pytest.skip(reason)


def load_frappe(path: Path) -> tuple[FeatureSpec, dict[str, torch.Tensor], torch.Tensor]:
    """The BARS Frappe_x1 validation CSV (57,722 real rows), each field encoded as bars encodes categoricals:
    0 padding, 1 OOV, known values from 2 by count descending then value."""
    with gzip.open(path, "rt", newline="") as fh:
        header = fh.readline().strip().split(",")
        data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    label_col = header.index("label")
    feats, cols = [], {}
    for j, name in enumerate(header):
        if j == label_col:
            continue
        vals, counts = np.unique(data[:, j], return_counts=True)
        order = np.lexsort((vals, -counts))
        lut = {int(v): i + 2 for i, v in enumerate(vals[order])}
        cols[name] = torch.tensor([lut[int(v)] for v in data[:, j]], dtype=torch.int32)
        feats.append(Feature(name=name, type="categorical", vocab_size=len(vals) + 2))
    spec = FeatureSpec(dataset="frappe_x1_valid", label="label", features=tuple(feats))
    return spec, cols, torch.tensor(data[:, label_col], dtype=torch.float32)


@pytest.fixture(scope="session")
def frappe():
    path = frappe_valid_csv()
    if path is None:
        require_or_skip("the Frappe_x1 files of ../shared/datasets/frappe_x1 are not on this machine")
    return load_frappe(path)
