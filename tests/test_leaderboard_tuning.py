"""Tuning compute and tuning-budget curves on a leaderboard, from a real MLflow store (SQLite, MLflow's own client):
a model whose sweep recorded compute (bars.compute metrics on its trial runs), one swept before compute was
measured (n/a, never a failure), one with some trials unrecorded (a lower bound) and one without a sweep."""

from __future__ import annotations

import csv
import random

import pytest
from _leaderboard_store import PROTOCOL_SEED, _common_tags, log_run
from mlflow.tracking import MlflowClient

from bars import compute as C
from bars import leaderboard as lb
from bars.leaderboard_render import plot_names

DATA = "frappe_x1"
# model -> per trial: (training samples, CPU-seconds) or None (no compute record); models without a sweep: absent
SWEEPS = {
    "dcn": [(1000, 2.0), (3000, 6.0), (2000, 4.0), (500, 1.0)],
    "dnn": [None, None, None],  # a sweep recorded before compute was measured
    "deepfm": [(4000, 8.0), None],  # resumed with a newer bars: only some trials recorded
}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("lbtuning")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(DATA, artifact_location=str(root / "artifacts"))
    rng = random.Random(3)
    (root / "src").mkdir()
    seed = PROTOCOL_SEED[DATA]
    for model in ("dcn", "dnn", "deepfm", "fm"):
        if model in SWEEPS:
            pid = client.create_run(exp, tags=_common_tags(DATA, model, seed, "sweep")).info.run_id
            for t, used in enumerate(SWEEPS[model]):
                rid = log_run(client, exp, root / "src", DATA, model, seed, "trial", rng, parent=pid, trial=t,
                              extra_tags={"state": "pruned"} if t == 3 else None)
                if used is not None:  # what bars.sweep logs on the trial's run when it ends
                    for k, v in ((C.TRAIN_SAMPLES, used[0]), (C.CPU_S, used[1]), (C.WALL_S, used[1] / 2)):
                        client.log_metric(rid, k, float(v))
        for s in (seed, seed + 1):
            log_run(client, exp, root / "src", DATA, model, s, "final", rng)
    out = root / "results"
    boards = lb.generate(uri, out, root=root)
    return {"board": boards[DATA], "out": out, "client": client, "exp": exp}


def test_tuning_compute_sums_the_trial_records(board):
    rows = {r.model: r for r in board["board"].rows}
    t = rows["dcn"].tuning
    assert (t.trials, t.recorded, t.train_samples, t.cpu_s, t.wall_s) == (4, 4, 6500.0, 13.0, 6.5)
    assert rows["dnn"].tuning.trials == 3 and rows["dnn"].tuning.recorded == 0
    assert rows["dnn"].tuning.train_samples is None and rows["fm"].tuning is None
    d = rows["deepfm"].tuning
    assert (d.trials, d.recorded, d.train_samples) == (2, 1, 4000.0)


def test_tuning_curve_is_best_so_far_against_trials_and_cumulative_compute(board):
    rows = {r.model: r for r in board["board"].rows}
    client = board["client"]
    # validation AUC of each complete trial, read back through MLflow's API
    vals = {}
    for r in client.search_runs([board["exp"]], "tags.stage = 'trial' and tags.model = 'dcn'"):
        if r.data.tags.get("state") == "complete":
            vals[int(r.data.tags["trial_number"])] = r.data.metrics["val_auc"]
    curve = rows["dcn"].tuning.curve
    assert [p[0] for p in curve] == [0, 1, 2, 3] and [p[1] for p in curve] == [1, 2, 3, 4]
    assert [p[2] for p in curve] == [1000, 4000, 6000, 6500] and [p[3] for p in curve] == [2, 8, 12, 13]
    assert [p[4] for p in curve] == [max(v for n, v in vals.items() if n <= i) for i in range(4)]  # trial 3 pruned
    # no compute records: the curve against trials only
    assert all(p[2] is None and p[3] is None for p in rows["dnn"].tuning.curve)
    assert len(rows["dnn"].tuning.curve) == 3


def test_board_shows_the_column_and_na_and_writes_the_plot(board):
    out = board["out"]
    md = (out / f"{DATA}.md").read_text()
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model |"))
    assert "Tuning compute³" in lines[start]
    table = lines[start + 2:lines.index("", start)]  # the board's table, not the runs table below it
    cells = {line.split("|")[1].strip(): line for line in table}
    assert "| 6.5k samples, 0.00361 CPU-h |" in cells["dcn"]
    assert "| n/a |" in cells["dnn"] and "| ≥ 4k samples, 0.00222 CPU-h |" in cells["deepfm"]
    assert "| — |" in cells["fm"]
    assert "³ Tuning compute" in md
    png = out / plot_names(DATA)["tuning"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({png.name})" in md and png.name in (out / "index.html").read_text()
    rows = {r["model"]: r for r in csv.DictReader((out / f"{DATA}.csv").open())}
    assert float(rows["dcn"]["tuning_train_samples"]) == 6500.0 and float(rows["dcn"]["tuning_cpu_s"]) == 13.0
    assert rows["dnn"]["tuning_train_samples"] == "" and rows["dnn"]["tuning_trials_recorded"] == "0"
    assert rows["fm"]["tuning_trials_recorded"] == ""


def test_old_board_without_any_compute_never_fails(tmp_path):
    """Only sweeps recorded before compute was measured: the column reads n/a, the plot says so."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(DATA, artifact_location=str(tmp_path / "artifacts"))
    rng = random.Random(5)
    (tmp_path / "src").mkdir()
    seed = PROTOCOL_SEED[DATA]
    pid = client.create_run(exp, tags=_common_tags(DATA, "dcn", seed, "sweep")).info.run_id
    for t in range(2):
        log_run(client, exp, tmp_path / "src", DATA, "dcn", seed, "trial", rng, parent=pid, trial=t)
    log_run(client, exp, tmp_path / "src", DATA, "dcn", seed, "final", rng)
    boards = lb.generate(uri, tmp_path / "results", root=tmp_path)
    assert boards[DATA].rows[0].tuning.recorded == 0
    assert "| n/a |" in (tmp_path / "results" / f"{DATA}.md").read_text()
    assert (tmp_path / "results" / plot_names(DATA)["tuning"]).is_file()
