"""Runs trained with a numeric switch (train.precision=bf16, train.tf32=true) form their own leaderboard rows: a
board never averages their seeds with float32 runs of the same model. A real MLflow store (SQLite), written with
MLflow's client in the shape bars.run writes."""

from __future__ import annotations

import csv
import random

import pytest
from _leaderboard_store import log_run
from mlflow.tracking import MlflowClient

from bars import leaderboard as lb


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("switches")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("frappe_x1", artifact_location=str(root / "artifacts"))
    rng = random.Random(3)
    runs: dict[str, dict[int, str]] = {}
    for label, params in (("dcn", {"train.precision": "fp32", "train.tf32": "False"}),
                          ("dcn [bf16]", {"train.precision": "bf16", "train.tf32": "False"}),
                          ("dcn [tf32]", {"train.precision": "fp32", "train.tf32": "True"}),
                          ("dcn [bf16, tf32]", {"train.precision": "bf16", "train.tf32": "True"}),
                          ("dcn [bars, bf16]", {"train.precision": "bf16"})):
        tags = ({"preset": "bars", "preset_file": "conf/presets/bars/frappe_x1/dcn.yaml",
                 "preset_source": "reczoo/BARS:ranking/ctr/DCN/DCN_frappe_x1/README.md"} if "bars" in label else {})
        for seed in (2021, 2022):
            rid = log_run(client, exp, root / "src", "frappe_x1", "dcn", seed, "final", rng, extra_tags=tags,
                          extra_params=params)
            runs.setdefault(label, {})[seed] = rid
    out = root / "results"
    boards = lb.generate(uri, out, root=root)
    return {"client": client, "runs": runs, "board": boards["frappe_x1"], "out": out}


def test_each_switch_is_its_own_row_with_its_own_seeds(board):
    rows = {r.model: r for r in board["board"].rows}
    assert set(rows) == set(board["runs"])
    for label, seeds in board["runs"].items():
        row = rows[label]
        assert set(row.run_ids) == set(seeds.values()) and row.n == 2
        want = [board["client"].get_run(rid).data.metrics["test_auc"] for rid in seeds.values()]
        assert row.test_auc_mean == pytest.approx(sum(want) / 2, abs=1e-12)


def test_switch_rows_keep_their_bars_comparison(board):
    rows = {r.model: r for r in board["board"].rows}
    for label in ("dcn", "dcn [bf16]", "dcn [tf32]"):
        assert rows[label].bars_model == "DCN" and rows[label].bars_auc is not None  # model.bars_name
    assert rows["dcn [bars, bf16]"].bars_source == "reczoo/BARS:ranking/ctr/DCN/DCN_frappe_x1/README.md"


def test_the_csv_names_the_rows(board):
    with open(board["out"] / "frappe_x1.csv", newline="") as f:
        names = [row["model"] for row in csv.DictReader(f)]
    assert sorted(names) == sorted(board["runs"])


def test_runs_recorded_before_the_switches_are_float32():
    assert lb.numeric_switches({}) == [] and lb.numeric_switches({"train.precision": "None"}) == []
    assert lb.numeric_switches({"train.precision": "fp32", "train.tf32": "False"}) == []
    assert lb.numeric_switches({"train.precision": "bf16", "train.tf32": "True"}) == ["bf16", "tf32"]
