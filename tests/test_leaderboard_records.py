"""Run-record files: the runs behind a board kept as a file (bars.records.dump_records / read_records) and boards
rebuilt or extended from them (``bars leaderboard leaderboard.records=[...]``, ``leaderboard.save_records``).

Against a real MLflow store (SQLite in a temp folder) populated with MLflow's own client (tests/_leaderboard_store).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _leaderboard_store import populate

from bars import leaderboard as lb
from bars.records import RecordsError, dump_records, list_experiments, load_runs, read_records

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
TABLES = ("frappe_x1.md", "frappe_x1.csv", "movielens_small.md", "movielens_small.csv")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("recstore")
    uri = populate(root)
    out = root / "results"
    lb.generate(uri, out, root=root, save_records=True)
    return {"root": root, "uri": uri, "out": out, "runs": load_runs(uri, list_experiments(uri))}


def _without_source(text: str) -> str:
    """A table's text less the provenance line that names where the runs were read from."""
    return "\n".join(line for line in text.splitlines() if " from MLflow at " not in line)


def test_records_round_trip_with_deterministic_bytes(store, tmp_path):
    runs = store["runs"]
    assert len(runs) > 20 and any(r.history for r in runs)  # finals carry their per-epoch histories
    a = dump_records(runs, tmp_path / "a.jsonl.gz")
    b = dump_records(list(reversed(runs)), tmp_path / "b.jsonl.gz")
    assert a.read_bytes() == b.read_bytes()
    back = read_records(a)
    assert sorted(back, key=lambda r: r.run_id) == sorted(runs, key=lambda r: r.run_id)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_saved_records_hold_exactly_each_boards_runs(store):
    for d in ("frappe_x1", "movielens_small"):
        recs = read_records(store["out"] / f"{d}_runs.jsonl.gz")
        assert {r.run_id for r in recs} == {r.run_id for r in store["runs"] if lb.board_key(r) == d}


def test_board_from_records_alone_equals_the_board_from_the_store(store, tmp_path):
    files = [store["out"] / f"{d}_runs.jsonl.gz" for d in ("frappe_x1", "movielens_small")]
    missing_store = f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}"
    out = store["root"] / "from_records"  # beside results/: the same links to ../sweeps
    lb.generate(missing_store, out, root=store["root"], records=files)
    assert not (tmp_path / "no-store").exists()  # reading records never creates a store
    for name in TABLES:
        ours, theirs = (out / name).read_text(), (store["out"] / name).read_text()
        assert _without_source(ours) == _without_source(theirs), name
    md = (out / "frappe_x1.md").read_text()
    assert "from MLflow at records results/frappe_x1_runs.jsonl.gz + records results/movielens_small_runs" in md


def test_a_board_split_over_two_stores_merges_into_the_whole(store, tmp_path):
    """Half of the models recorded in one place, half in another (two machines, two sessions): the store of one
    plus the record file of the other gives the board of both."""
    runs = [r for r in store["runs"] if lb.board_key(r) == "movielens_small"]
    first = {"dcn", "fm"}
    part = dump_records([r for r in runs if r.model not in first], tmp_path / "part.jsonl.gz")
    merged = lb.merge_records([r for r in runs if r.model in first], {"part": read_records(part)})
    assert {r.run_id for r in merged} == {r.run_id for r in runs}
    whole = lb.build(runs)["movielens_small"]
    assert lb.build(merged)["movielens_small"] == whole
    assert {row.model for row in lb.build([r for r in runs if r.model in first])["movielens_small"].rows} == first


def test_a_run_recorded_differently_in_two_places_is_an_error(store):
    import dataclasses

    runs = [r for r in store["runs"] if lb.board_key(r) == "frappe_x1"]
    final = next(r for r in runs if r.stage == "final" and r.status == "FINISHED")
    changed = dataclasses.replace(final, metrics={**final.metrics, "test_auc": 0.5})
    with pytest.raises(ValueError, match=f"run {final.run_id} differs between the store and edited.jsonl.gz"):
        lb.merge_records(runs, {"edited.jsonl.gz": [changed]})
    assert len(lb.merge_records(runs, {"same": [final]})) == len(runs)  # the same record twice is one run


def test_the_stores_copy_of_a_running_run_wins_over_an_older_record(store):
    """A file saved while a run was still RUNNING, merged with the store that kept recording it: the store's copy
    (newer) is kept, not an error; a RUNNING store copy that conflicts with a file is never silently replaced by
    the file's copy."""
    import dataclasses

    runs = [r for r in store["runs"] if lb.board_key(r) == "frappe_x1"]
    final = next(r for r in runs if r.stage == "final" and r.status == "FINISHED")
    live = dataclasses.replace(final, status="RUNNING", metrics={**final.metrics, "test_auc": 0.5})
    older = dataclasses.replace(final, status="RUNNING")
    store_runs = [live if r.run_id == final.run_id else r for r in runs]
    merged = lb.merge_records(store_runs, {"saved-earlier": [older]})
    assert len(merged) == len(runs)
    assert next(r for r in merged if r.run_id == final.run_id) is live
    with pytest.raises(ValueError, match=f"run {final.run_id} differs"):  # only the store's copy may be newer
        lb.merge_records(runs, {"a": [older], "b": [live]})


def test_uri_label_shows_a_store_inside_the_project_relative_to_it(tmp_path):
    assert lb.uri_label(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path) == "sqlite:///mlflow.db"
    outside = f"sqlite:///{tmp_path.parent / 'elsewhere.db'}"
    assert lb.uri_label(outside, tmp_path) == outside
    assert lb.uri_label("postgresql://bars:secret@db:5432/mlflow", tmp_path) == "postgresql://bars@db:5432/mlflow"


def test_bad_record_files_are_clear_errors(store, tmp_path):
    good = store["out"] / "frappe_x1_runs.jsonl.gz"
    lines = gzip.decompress(good.read_bytes()).decode().splitlines()

    def write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_bytes(gzip.compress(text.encode()))
        return p

    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text("not gzip")
    with pytest.raises(RecordsError, match="plain.jsonl.gz: cannot read run records"):
        read_records(plain)
    with pytest.raises(RecordsError, match="truncated.jsonl.gz: the header announces .* runs but the file holds"):
        read_records(write("truncated.jsonl.gz", "\n".join(lines[:-1]) + "\n"))
    with pytest.raises(RecordsError, match="header.jsonl.gz, line 1: expected the header format"):
        read_records(write("header.jsonl.gz", "\n".join(['{"format": "x"}', *lines[1:]])))
    run = json.loads(lines[2])
    run["colour"] = "red"
    with pytest.raises(RecordsError, match=r"key.jsonl.gz, line 3: expected the keys .* unknown \['colour'\]"):
        read_records(write("key.jsonl.gz", "\n".join([*lines[:2], json.dumps(run), *lines[3:]])))
    with pytest.raises(RecordsError, match="json.jsonl.gz, line 2: not JSON"):
        read_records(write("json.jsonl.gz", "\n".join([lines[0], "{oops", *lines[2:]])))


def test_cli_extends_a_board_from_a_record_file_and_saves_it(store, tmp_path):
    """`bars leaderboard leaderboard.records=[...] leaderboard.save_records=true` on a project with no store: the
    tables are rebuilt from the file, and saving reads it before it is rewritten (same runs, same bytes)."""
    proj = tmp_path / "proj"
    (proj / "results").mkdir(parents=True)
    rec = proj / "results" / "frappe_x1_runs.jsonl.gz"
    rec.write_bytes((store["out"] / "frappe_x1_runs.jsonl.gz").read_bytes())
    env = {**os.environ, "BARS_HOME": str(proj), "MLFLOW_TRACKING_URI": f"sqlite:///{proj / 'mlflow.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "bars.cli", "leaderboard", "leaderboard.data=frappe_x1",
         "leaderboard.records=[results/frappe_x1_runs.jsonl.gz]", "leaderboard.save_records=true",
         f"paths.results={proj / 'results'}", f"paths.root={proj}"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "frappe_x1: 2 models" in proc.stdout
    assert rec.read_bytes() == (store["out"] / "frappe_x1_runs.jsonl.gz").read_bytes()
    assert _without_source((proj / "results" / "frappe_x1.md").read_text()) == _without_source(
        (store["out"] / "frappe_x1.md").read_text())
    assert not (proj / "mlflow.db").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "bars.cli", "leaderboard", "leaderboard.save_records=maybe", f"paths.root={proj}"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "leaderboard.save_records must be true or false" in bad.stdout + bad.stderr


COMMITTED = sorted((ROOT / "results").glob("*_runs.jsonl.gz"))


@pytest.mark.skipif(not COMMITTED, reason="no run-record file committed under results/")
@pytest.mark.parametrize("records", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_tables_equal_their_committed_records(records, tmp_path):
    """A published board (results/<d>.md and .csv) is what its committed run records give, on any machine and
    without the MLflow store it came from."""
    d = records.name[: -len("_runs.jsonl.gz")]
    out = tmp_path / "results"
    lb.generate(f"sqlite:///{tmp_path / 'no-store.db'}", out, datasets=[d], root=ROOT, records=[records],
                link_prefix="../")
    for name in (f"{d}.md", f"{d}.csv"):
        assert _without_source((out / name).read_text()) == _without_source((ROOT / "results" / name).read_text()), name
