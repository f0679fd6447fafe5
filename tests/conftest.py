"""Shared fixtures. Keep it tidy: one fixture per need, documented."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bars.config import PROJECT_ROOT, compose

# `make test ARGS=...` hands its command-line variables to every make below it (exported, and in MAKEFLAGS): a test
# that runs `make train ...` would then pass the pytest options in ARGS to `bars train`. The tests' own make calls
# start clean.
for _var in ("ARGS", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL"):
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Every test leaves torch's intra-op thread count as it found it. A run with ``train.num_threads=1`` sets it
    for the whole process, and float reductions differ by thread count: a later test's numbers then depended on
    which tests ran before it (test_real_fit_on_frappe_every_model: DSSM 0.9269 alone, 0.8551 after the rest of
    ``make test-slow``, exactly its 1-thread figure)."""
    import torch

    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _find_shared() -> Path:
    """The workplace's ../shared (real public data, reference facts): $BARS_SHARED, else next to the project,
    else /work/shared (so a fresh clone in a temporary folder still finds it)."""
    for cand in (os.environ.get("BARS_SHARED"), PROJECT_ROOT.parent / "shared", "/work/shared"):
        if cand and Path(cand, "datasets").is_dir():
            return Path(cand)
    return PROJECT_ROOT.parent / "shared"


SHARED = _find_shared()
SHARED_DATASETS = SHARED / "datasets"


@pytest.fixture
def shared_datasets() -> Path:
    """../shared/datasets (real public data; Frappe is read from there only, never copied into the repo)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets not available")
    return SHARED_DATASETS


@pytest.fixture
def data_cfg(tmp_path):
    """``data_cfg("data=movielens_small", ...)``: a composed config whose paths.data is under tmp_path."""

    def make(*overrides: str):
        return compose([f"paths.data={tmp_path / 'data'}", *overrides])

    return make


@pytest.fixture
def criteo_raw(tmp_path, shared_datasets) -> Path:
    """A raw folder holding the real Kaggle Criteo head (train.txt.gz, 10,000 rows)."""
    d = tmp_path / "criteo_raw"
    d.mkdir()
    shutil.copy(shared_datasets / "criteo_head10k" / "raw" / "train.txt.gz", d / "train.txt.gz")
    return d


@pytest.fixture(scope="session")
def movielens_folder(tmp_path_factory) -> Path:
    """The shipped movielens_small demo data, prepared once per session."""
    from bars.data.prepare import prepare

    root = tmp_path_factory.mktemp("ml")
    return prepare(compose(["data=movielens_small", f"paths.data={root}"]), quiet=True)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict:
    """A real recorded run on movielens_small (DCN with a small tower, one epoch, CPU, one thread) in a temporary
    MLflow store: ``{"root", "uri", "run_id", "overrides", "result"}``; ``overrides`` compose a config on that store
    (``bars predict`` / ``bars export`` read the run from it)."""
    from bars.run import train_one

    root = tmp_path_factory.mktemp("trained")
    overrides = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"paths.data={root / 'data'}",
                 f"paths.checkpoints={root / 'ckpt'}", f"paths.predictions={root / 'predictions'}",
                 f"paths.exports={root / 'exports'}"]
    cfg = compose(["model=dcn", "data=movielens_small", "model.params.dnn_hidden_units=[64,64]",
                   "train.max_epochs=1", "train.num_threads=1", "train.device=cpu", *overrides])
    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "run_id": r.run_id, "overrides": overrides,
            "result": r}
