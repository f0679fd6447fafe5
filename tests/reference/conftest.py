"""Fixtures of the reference suite: real Frappe_x1 rows from ../shared, encoded as the project encodes them.

Without ../shared the tests that need data skip with the reason, unless BARS_REQUIRE_REFERENCE=1 (CI), where
they fail."""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def require_official_or_skip(reason: str) -> None:
    """A paper's official code comes from GitHub, which CI cannot reach (package registries only): its absence
    fails only under BARS_REQUIRE_OFFICIAL=1 (a machine that fetched the repositories), not under
    BARS_REQUIRE_REFERENCE=1."""
    if os.environ.get("BARS_REQUIRE_OFFICIAL") == "1":
        pytest.fail(f"BARS_REQUIRE_OFFICIAL=1 but {reason}")
    pytest.skip(reason)


def import_official(tmp_path: Path, what: str, env: str, default: str, files: dict[str, str],
                    modules: list[str]) -> list[ModuleType]:
    """Modules of a paper's official code, imported fresh from a checkout or a bare git mirror of it (``$env``, else
    ``default``; absent: skipped with the reason, or failed under BARS_REQUIRE_OFFICIAL=1). ``files`` maps a path
    in the repository to where it goes under a new folder of ``tmp_path`` (so that the official package names
    import; each folder gets an ``__init__.py``); earlier imports of the modules' top-level names are dropped, then
    ``modules`` are imported from that folder, which leaves ``sys.path`` again."""
    repo = Path(os.environ.get(env, default))
    if not repo.exists():
        require_official_or_skip(f"the official {what} code is not at {repo} (set {env})")
    root = tmp_path / f"{what.lower()}_official"
    for src, dst in files.items():
        if (repo / src).exists():
            text = (repo / src).read_text()
        else:  # a bare mirror
            text = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{src}"], check=True, capture_output=True,
                                  text=True).stdout
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        (root / dst).write_text(text)
        if (root / dst).parent != root:
            (root / dst).parent.joinpath("__init__.py").touch()
    tops = {m.split(".")[0] for m in modules}
    sys.path.insert(0, str(root))
    try:
        for mod in [m for m in sys.modules if m.split(".")[0] in tops]:
            sys.modules.pop(mod, None)
        return [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(str(root))


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


HISTORY_MAX_LEN = 8  # the synthetic behaviour histories of frappe_seq (see add_histories)


def add_histories(frappe, max_len: int = HISTORY_MAX_LEN, seed: int = 2021):
    """The Frappe rows with two behaviour-history columns, for the sequence models (DIN, BST): ``item_history``
    (sharing ``item``'s table) and ``cost_history`` (sharing ``cost``'s, aligned: the cost of each history item).
    A row's history is a seeded draw, without replacement, of items the same user clicked in these rows (real
    items, by the user's taste), of a length drawn uniformly from 0 (no behaviour) to ``max_len``, in random order,
    0-padded after the values (FuxiCTR's default ``padding: post``; ``max_len`` fixed). The sequence fields come
    after the Frappe fields and share the owners' vocabularies (``vocab_size`` equal, as the engine merges them)."""
    spec, cols, y = frappe
    rng = np.random.default_rng(seed)
    user, item, cost = (cols[n].numpy() for n in ("user", "item", "cost"))
    pairs, counts = np.unique(np.stack([item, cost], axis=1), axis=0, return_counts=True)
    item_cost: dict[int, int] = {}  # an item's cost: its most frequent cost index here (cost is an item attribute)
    for (i, c), k in sorted(zip(pairs.tolist(), counts.tolist(), strict=True), key=lambda t: -t[1]):
        item_cost.setdefault(i, c)
    clicked: dict[int, np.ndarray] = {}
    pos = y.numpy() > 0.5
    for u in np.unique(user):
        clicked[int(u)] = np.unique(item[(user == u) & pos])
    n = len(y)
    hist = np.zeros((n, max_len), dtype=np.int32)
    lengths = rng.integers(0, max_len + 1, size=n)
    for r in range(n):
        pool = clicked[int(user[r])]
        k = min(int(lengths[r]), len(pool))
        if k:
            hist[r, :k] = rng.choice(pool, size=k, replace=False)
    lut = np.zeros(int(item.max()) + 1, dtype=np.int32)
    for i, c in item_cost.items():
        lut[i] = c
    cost_hist = np.where(hist > 0, lut[hist], 0).astype(np.int32)
    seq = (dataclasses.replace(spec["item"], name="item_history", type="sequence", max_len=max_len,
                               share_embedding="item", source="synthetic: items the user clicked"),
           dataclasses.replace(spec["cost"], name="cost_history", type="sequence", max_len=max_len,
                               share_embedding="cost", source="synthetic: the costs of item_history"))
    spec = dataclasses.replace(spec, dataset=spec.dataset + "_seq", features=spec.features + seq)
    cols = {**cols, "item_history": torch.from_numpy(hist), "cost_history": torch.from_numpy(cost_hist)}
    return spec, cols, y


@pytest.fixture(scope="session")
def frappe_seq(frappe):
    """The Frappe rows with synthetic behaviour histories (:func:`add_histories`), for ``Reference(data=
    "frappe_seq")``."""
    return add_histories(frappe)


def add_negatives(frappe_seq, seed: int = 2022):
    """The :func:`add_histories` rows plus ``neg_item``, a categorical column with one negative item per row (DMR's
    auxiliary match loss: FuxiCTR's ``neg_seq_field``): a seeded uniform draw among the known items (indices 2 ..
    vocab - 1 of ``item``'s vocabulary), moved to the next item where it equals the row's last history item.
    It has ``item``'s vocabulary size and no shared table (in FuxiCTR and here a model not reading it embeds it as
    any categorical field)."""
    spec, cols, y = frappe_seq
    vocab = spec["item"].vocab_size
    rng = np.random.default_rng(seed)
    neg = rng.integers(2, vocab, size=len(y))
    last = cols["item_history"][:, -1].numpy()
    neg = np.where(neg == last, 2 + (neg - 1) % (vocab - 2), neg).astype(np.int32)
    feat = dataclasses.replace(spec["item"], name="neg_item", source="synthetic: a random item per row")
    spec = dataclasses.replace(spec, dataset=spec.dataset + "_neg", features=spec.features + (feat,))
    return spec, {**cols, "neg_item": torch.from_numpy(neg)}, y


@pytest.fixture(scope="session")
def frappe_seq_neg(frappe_seq):
    """The behaviour-history rows with a negative item per row (:func:`add_negatives`), for DMR's auxiliary loss."""
    return add_negatives(frappe_seq)
