"""bars.leaderboard against a real MLflow store (SQLite in a temp folder) populated with MLflow's own client.

The key check: every number in results/<d>.csv and results/<d>.md equals what MLflow holds, read back here
independently through MLflow's API (not through bars.records).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _leaderboard_store import LAYOUT, populate
from conftest import SHARED
from scipy import stats

from bars import leaderboard as lb
from bars import published as bars_published

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("lbstore")
    uri = populate(root)
    out = root / "results"
    boards = lb.generate(uri, out, root=root)
    return {"root": root, "uri": uri, "out": out, "boards": boards}


def mlflow_finals(uri: str, data: str, only: set[str] | None = None) -> dict[str, dict[int, object]]:
    """model -> seed -> the newest FINISHED stage=final run (among ``only`` run ids when given), straight from
    MLflow's API."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(data)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'final' and attributes.status = 'FINISHED'",
                              max_results=1000)
    out: dict[str, dict[int, object]] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        if only is not None and r.info.run_id not in only:
            continue
        out.setdefault(r.data.tags["model"], {})[int(r.data.tags["seed"])] = r
    return out


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def md_table(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return header, rows


def close(a: str, b: float) -> bool:
    return abs(float(a) - b) <= 1e-12 * max(1.0, abs(b))


@pytest.mark.parametrize("data", sorted(LAYOUT))
def test_every_number_equals_the_mlflow_record(store, data):
    check_numbers(store["uri"], store["out"], data)
    table = read_csv(store["out"] / f"{data}.csv")
    assert {m: int(r["n"]) for m, r in table.items()} == LAYOUT[data]


def test_committed_results_equal_the_project_store():
    """results/ as committed vs the project's own MLflow store, where both exist (the machine that made them)."""
    from bars.config import compose

    uri = str(compose([]).tracking.uri)
    db = ROOT / "mlflow.db"
    files = sorted((ROOT / "results").glob("*.csv"))
    if not uri.startswith("sqlite:///") or not db.exists() or not files:
        pytest.skip("no project MLflow store or no results/ here")
    for f in files:
        # the runs the committed table names (finals run after it was generated are not in it)
        only = {i for r in read_csv(f).values() for i in r["run_ids"].split()}
        present = {i for i in only if _run_exists(uri, i)}
        if not present:
            pytest.skip(f"{f.name} was generated from another MLflow store (none of its runs is in {uri})")
        assert present == only, f"{f.name}: runs missing from {uri}: {sorted(only - present)}"
        check_numbers(uri, ROOT / "results", f.stem, only)
        check_significance(uri, ROOT / "results", f.stem, only)


def _run_exists(uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
        return True
    except MlflowException:
        return False


def check_numbers(uri: str, out: Path, data: str, only: set[str] | None = None) -> None:
    """Every number of results/<data>.{csv,md} against MLflow's own API."""
    finals = mlflow_finals(uri, data, only)
    table = read_csv(out / f"{data}.csv")
    header, md = md_table(out / f"{data}.md")
    published = bars_published.load_published()
    assert set(table) == set(finals) == set(md)
    for model, by_seed in finals.items():
        row, mrow = table[model], md[model]
        seeds = sorted(by_seed)
        runs = [by_seed[s] for s in seeds]
        auc = np.array([r.data.metrics["test_auc"] for r in runs])
        ll = np.array([r.data.metrics["test_logloss"] for r in runs])
        params = runs[0].data.params  # runs recorded before the protocol block moved have data.protocol_seed
        pseed = int(params["protocol.seed"] if "protocol.seed" in params else params["data.protocol_seed"])
        # the BARS split and model name the runs recorded (none for runs recorded before they were configs)
        split = params.get("data.bars_split") if params.get("data.bars_split") != "None" else None
        bars_name = params.get("model.bars_name") or bars_published.bars_model_name(model, {m for _, m in published})
        assert int(row["n"]) == len(runs) == int(mrow["n"])
        assert row["seeds"] == " ".join(map(str, seeds))
        assert row["run_ids"] == " ".join(r.info.run_id for r in runs)
        assert close(row["test_auc_mean"], auc.mean()) and close(row["test_logloss_mean"], ll.mean())
        assert mrow["Test AUC (mean ± std)"].startswith(f"{auc.mean():.4f} ± ")
        assert mrow["Test logloss (mean ± std)"].startswith(f"{ll.mean():.4f} ± ")
        if len(runs) > 1:
            assert close(row["test_auc_std"], auc.std(ddof=1))
            assert close(row["test_logloss_std"], ll.std(ddof=1))
            assert mrow["Test AUC (mean ± std)"] == f"{auc.mean():.4f} ± {auc.std(ddof=1):.4f}"
        else:
            assert row["test_auc_std"] == "" and mrow["Test AUC (mean ± std)"].endswith("± n/a")
        prot = by_seed[pseed]
        assert int(row["protocol_seed"]) == pseed
        assert row["protocol_run_id"] == prot.info.run_id
        assert float(row["protocol_test_auc"]) == prot.data.metrics["test_auc"]  # exact: repr round-trips
        assert float(row["protocol_test_logloss"]) == prot.data.metrics["test_logloss"]
        seed = pseed
        assert mrow[f"Test AUC, seed {seed}"] == f"{prot.data.metrics['test_auc']:.4f}"
        assert mrow[f"Test logloss, seed {seed}"] == f"{prot.data.metrics['test_logloss']:.4f}"
        assert int(row["n_params"]) == int(prot.data.metrics["n_params"])
        assert mrow["Params"] == f"{int(prot.data.metrics['n_params']):,}"
        spe = np.mean([r.data.metrics["seconds_per_epoch"] for r in runs])
        assert close(row["seconds_per_epoch"], spe) and mrow["s/epoch"] == f"{spe:.2f}"
        sps = np.mean([r.data.metrics["samples_per_s_mean"] for r in runs])
        assert close(row["samples_per_s"], sps) and mrow["samples/s"] == f"{round(sps):,}"
        assert row["device"] == ", ".join(sorted({r.data.tags["device"] for r in runs})) == mrow["Device"]
        if split:
            pub = published[(split, bars_name)]
            assert float(row["bars_auc"]) == pub.auc and mrow["BARS AUC"] == f"{pub.auc:.4f}"
            assert close(row["diff_auc"], prot.data.metrics["test_auc"] - pub.auc)
            assert mrow["Δ AUC²"] == f"{prot.data.metrics['test_auc'] - pub.auc:+.4f}"
            assert close(row["diff_logloss"], prot.data.metrics["test_logloss"] - pub.logloss)
        else:
            assert row["bars_auc"] == "" and "BARS AUC" not in header
        # the per-run table in the markdown
        text = (out / f"{data}.md").read_text()
        for s, r in zip(seeds, runs, strict=True):
            line = (f"| {model} | {s} | {r.data.metrics['test_auc']:.6f} | {r.data.metrics['test_logloss']:.6f} "
                    f"| `{r.info.run_id}` |")
            assert line in text


def check_significance(uri: str, out: Path, data: str, only: set[str] | None = None) -> None:
    finals = mlflow_finals(uri, data, only)
    table = read_csv(out / f"{data}.csv")
    means = {m: np.mean([r.data.metrics["test_auc"] for r in s.values()]) for m, s in finals.items()}
    best = max(means, key=means.get)
    assert table[best]["significance"] == "best"
    for model, by_seed in finals.items():
        if model == best:
            continue
        seeds = sorted(set(by_seed) & set(finals[best]))
        if len(seeds) < 2:
            assert table[model]["significance"] == "n/a" and table[model]["p_value"] == ""
            continue
        p = stats.ttest_rel([finals[best][s].data.metrics["test_auc"] for s in seeds],
                            [by_seed[s].data.metrics["test_auc"] for s in seeds]).pvalue
        assert close(table[model]["p_value"], p)
        assert table[model]["significance"] == ("ns" if p >= 0.05 else "sig")


def test_significance_is_a_paired_t_test_over_matched_seeds(store):
    data = "movielens_small"
    check_significance(store["uri"], store["out"], data)
    table = read_csv(store["out"] / f"{data}.csv")
    assert table["fm"]["significance"] == "n/a"  # one seed only
    md = (store["out"] / f"{data}.md").read_text()
    assert "scipy.stats.ttest_rel" in md and "n/a: fewer than 2 matched seeds" in md


def test_rows_exclude_failed_single_and_superseded_runs(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store["uri"])
    exp = client.get_experiment_by_name("movielens_small")
    every = client.search_runs([exp.experiment_id], max_results=1000)
    csv_ids = " ".join(r["run_ids"] for r in read_csv(store["out"] / "movielens_small.csv").values()).split()
    excluded = [r for r in every if r.data.tags.get("stage") != "final" or r.info.status != "FINISHED"
                or r.data.tags.get("fixture_superseded")]
    assert excluded and not {r.info.run_id for r in excluded} & set(csv_ids)
    assert len(csv_ids) == sum(LAYOUT["movielens_small"].values())


def test_trials_and_sweep_curves(store):
    board = store["boards"]["movielens_small"]
    rows = {r.model: r for r in board.rows}
    assert rows["dcn"].trials == 5 and dict(rows["dcn"].trial_states) == {"complete": 3, "pruned": 1, "failed": 1}
    assert rows["dcn"].best_config == "sweeps/dcn__movielens_small/best.overrides"
    assert rows["fm"].trials == 0 and rows["fm"].best_config is None
    md = (store["out"] / "movielens_small.md").read_text()
    assert "[best.overrides](../sweeps/dcn__movielens_small/best.overrides)" in md
    for pts in board.sweeps.values():
        vals = [v for _, v in pts]
        assert vals == sorted(vals) and [t for t, _ in pts] == [0, 1, 2]  # completed trials only, best so far


def test_bars_mapping_is_explicit():
    from bars.config import compose

    pub = bars_published.load_published()
    names = {m for _, m in pub}
    # the BARS split is a fact of the data config; runs record it (data.bars_split)
    assert compose(["data=frappe_x1"]).data.bars_split == "Frappe_x1" and compose([]).data.bars_split is None
    # the rule for runs recorded before model configs named their BARS model
    assert bars_published.bars_model_name("dcn", names) == "DCN"
    assert bars_published.bars_model_name("autoint", names) == "AutoInt+"
    assert bars_published.bars_model_name("autoint", names, {"model.params.use_dnn": "False"}) == "AutoInt"
    assert bars_published.bars_model_name("widedeep", names) == "WideDeep"
    assert bars_published.bars_model_name("xdeepfm", names) == "xDeepFM"
    assert bars_published.bars_model_name("nonexistent", names) is None
    assert pub[("Frappe_x1", "DCN")].auc == 0.983907


def test_shipped_facts_equal_the_reference():
    ref = SHARED / "reference" / "bars_published.csv"
    if not ref.exists():
        pytest.skip("../shared/reference not present")
    shipped = ROOT / "bars" / "reference" / "bars_published.csv"
    assert shipped.read_bytes() == ref.read_bytes()


def test_output_is_deterministic(store):
    lb.generate(store["uri"], store["root"] / "again", root=store["root"])
    a, b = store["out"], store["root"] / "again"
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temp files left behind
    for n in names:
        if n.endswith((".md", ".csv", ".html", ".png")):
            assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_provenance(store):
    md = (store["out"] / "frappe_x1.md").read_text()
    assert "- bars version: 0.1.0" in md
    assert "- git commit: 1234567890abcdef1234567890abcdef12345678" in md
    assert "- data fingerprint: 0f1e2d3c4b5a" in md
    assert "- hardware: cpu" in md
    assert "from MLflow at sqlite:///mlflow.db" in md  # the store inside the project folder, shown relative
    assert re.search(r"newest run included ended: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", md)


def test_index_html_is_self_contained(store):
    page = (store["out"] / "index.html").read_text()
    assert "<table" in page and "<script>" in page and "<style>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page and "<script src" not in page
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert len(imgs) == 8 and all((store["out"] / i).is_file() for i in imgs)  # 4 per board: both have sweeps
    for d in LAYOUT:
        assert f'id="table-{d}"' in page


def test_learning_curves_hold_one_value_per_epoch(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store["uri"])
    for row in store["boards"]["movielens_small"].rows:
        for r in row.runs:
            hist = client.get_metric_history(r.run_id, "val_auc")
            epochs = int(client.get_run(r.run_id).data.metrics["epochs"])
            assert [s for s, _ in r.val_auc_curve] == list(range(1, epochs + 1))
            first = {}
            for m in sorted(hist, key=lambda m: (m.step, m.timestamp)):
                first.setdefault(m.step, m.value)
            assert dict(r.val_auc_curve) == first


def test_plots_are_pngs(store):
    for d in LAYOUT:
        for name in lb.plot_names(d).values():
            assert (store["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_dataset_is_a_clear_error(store, tmp_path):
    with pytest.raises(SystemExit, match="no finished final runs.*criteo_x1"):
        lb.generate(store["uri"], tmp_path / "r", datasets=["criteo_x1"], root=store["root"])


def test_cli_writes_one_dataset(store, tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}
    proc = subprocess.run(
        [sys.executable, "-m", "bars.cli", "leaderboard", "leaderboard.data=frappe_x1", f"paths.results={out}"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "frappe_x1.md").is_file() and (out / "frappe_x1.csv").is_file()
    assert not (out / "movielens_small.md").exists() and (out / "index.html").is_file()
    assert "frappe_x1: 2 models" in proc.stdout
    page = (out / "index.html").read_text()
    assert 'id="table-movielens_small"' in page  # the index covers every dataset in MLflow
