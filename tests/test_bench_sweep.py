"""`bars bench sweep` (the sweep-strategy study): the Frappe-files dataset config, a fast smoke run of the harness
on tiny data (real training, real Optuna samplers and pruners; resumable cells) and the report on a hand-made
partial result folder. The study itself is `make bench-sweep`, never part of `make test`."""

from __future__ import annotations

import json

import pytest

from bars.benchmarks import sweep as B
from bars.benchmarks import sweep_report as R


def test_frappe_vt_is_frappe_x1_valid_and_test_files_resplit(shared_datasets, data_cfg):
    from bars.data.prepare import prepare

    raw = shared_datasets / "frappe_x1" / "raw"
    if not (raw / "valid.libsvm.gz").is_file() or not (raw / "test.libsvm.gz").is_file():
        pytest.skip("Frappe_x1's valid/test libsvm files are not in ../shared/datasets/frappe_x1/raw")
    d = prepare(data_cfg("data=frappe_vt", f"data.raw_dir={raw}"), quiet=True)
    m = json.loads((d / "manifest.json").read_text())
    rows = {k: v["rows"] for k, v in m["splits"].items()}
    assert rows["train"] + rows["valid"] == 57722 and rows["test"] == 28860
    assert 0.78 < rows["train"] / 57722 < 0.82 and m["official_split"] is False
    spec = json.loads((d / "feature_spec.json").read_text())
    assert [f["name"] for f in spec["features"]] == ["user", "item", "daytime", "weekday", "isweekend", "homework",
                                                   "cost", "weather", "country", "city"]


@pytest.mark.parametrize(("extra", "match"), [
    (["data.files.test=null"], "data.files: expected train and test"),
    (["data.holdout_ratio=1.5"], r"data.holdout_ratio: expected a number in \(0, 1\)"),
    ([], r"no raw files in data.raw_dir=.*valid.libsvm"),
])
def test_frappe_vt_config_errors_name_the_key(tmp_path, data_cfg, extra, match):
    from bars.data.errors import DataError
    from bars.data.prepare import prepare

    with pytest.raises(DataError, match=match):
        prepare(data_cfg("data=frappe_vt", f"data.raw_dir={tmp_path / 'empty'}", *extra), quiet=True)


def test_harness_smoke_resumable(tmp_path, monkeypatch):
    """Tiny data, a 2x2 grid, one seed, --space grid: every strategy's cell is written, searches the grid's
    points only, spends the grid's share of compute, records per-trial compute and AUCs; a replayed point equals
    the point retrained; a rerun trains nothing; a deleted cell is redone alone; --space search is another study."""
    from bars import grids

    grid = grids.parse_grid({"axes": {"model.params.dropout": [0.1, 0.3], "train.embedding_regularizer": [0.001, 0.01]},
                             "set": {"model.params.hidden_units": [32, 32]}, "source": "test grid"}, "test grid")
    monkeypatch.setattr(B, "load_study_grid", lambda model: grid)
    out = tmp_path / "out"
    argv = ["--data", "movielens_small", "--models", "dnn", "--strategies", "grid,random,tpe_median,tpe_hyperband",
            "--seeds", "1", "--rows", "1500", "--epochs", "2", "--fraction", "1", "--out", str(out), "--no-overhead",
            "--data-dir", str(tmp_path / "data")]
    assert B.main(argv) == 0
    assert json.loads((out / "study.json").read_text())["space"] == "grid"
    cells = {c["strategy"]: c for c in R.load_cells(out)}
    assert set(cells) == {"grid", "random", "tpe_median", "tpe_hyperband"}
    g = cells["grid"]
    assert len(g["trials"]) == 4 and g["grid_budget"]["samples"] == sum(t["samples"] for t in g["trials"])
    # the grid sweep's order (GridPointsSampler, sweep.seed=0) over the grid's points
    assert [json.dumps(t["params"], sort_keys=True) for t in g["trials"]] == [
        json.dumps(grid.points[i], sort_keys=True) for i in B.grid_order(grid, 0)]
    by_point = {json.dumps(t["params"], sort_keys=True): t for t in g["trials"]}
    rows = g["train_rows"]
    for name in ("random", "tpe_median", "tpe_hyperband"):
        c = cells[name]
        trials = c["trials"]
        assert c["space"] == "grid"
        assert sum(t["samples"] for t in trials) >= g["grid_budget"]["samples"] or \
            sum(t["cpu_s"] for t in trials) >= g["grid_budget"]["cpu_s"]
        for t in trials:
            point = by_point[json.dumps(t["params"], sort_keys=True)]  # a grid point, nothing else
            assert len(t["val_aucs"]) == t["epochs"] and t["val_aucs"] == point["val_aucs"][:t["epochs"]]
            if t["state"] == "complete":
                assert (t["samples"], t["cpu_s"], t["test_auc"]) == (point["samples"], point["cpu_s"],
                                                                      point["test_auc"])
            else:
                assert t["test_auc"] is None and t["epochs"] < point["epochs"] + 1 and t["samples"] <= point["samples"]
    # replaying a point is retraining it: train one point again, live
    p0 = g["trials"][0]
    cfg = B.compose([*g["overrides"], *[f"{k}={B._hydra(v)}" for k, v in grid.set.items()]])
    live = B.train_trial(B.trial_cfg(cfg, p0["params"]), rows)
    assert live["val_aucs"] == p0["val_aucs"] and live["test_auc"] == pytest.approx(p0["test_auc"], abs=1e-9)
    with pytest.raises(SystemExit, match=r"--epochs 3 \(the study in .* has 2\)"):
        B.main([*argv, "--epochs", "3"])
    with pytest.raises(SystemExit, match=r"--space search \(the study in .* has grid\)"):
        B.main([*argv, "--space", "search"])
    report = (out / "report.md").read_text()
    assert "Cells: complete." in report and "TPE + Hyperband" in report

    calls = []
    monkeypatch.setattr(B, "train_trial", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    assert B.main(argv) == 0 and calls == []  # nothing retrained
    (out / "cells" / "movielens_small" / "dnn" / "grid" / "seed0.json").unlink()
    (out / "cells" / "movielens_small" / "dnn" / "tpe_median" / "seed0.json").unlink()
    assert B.main(argv) == 0 and calls == []  # the grid's trained points are kept: the cells are replayed
    assert (out / "cells" / "movielens_small" / "dnn" / "tpe_median" / "seed0.json").is_file()
    monkeypatch.undo()

    # --space search: the model's conf/search space, every trial trained
    monkeypatch.setattr(B, "load_study_grid", lambda model: grid)
    out2 = tmp_path / "out_search"
    argv2 = [*argv[:argv.index("--strategies")], "--strategies", "grid,tpe_median", *argv[argv.index("--seeds"):]]
    argv2[argv2.index(str(out))] = str(out2)
    argv2[argv2.index("--fraction") + 1] = "0.5"
    assert B.main([*argv2, "--space", "search"]) == 0
    c = {c["strategy"]: c for c in R.load_cells(out2)}["tpe_median"]
    assert c["space"] == "search" and all("train.learning_rate" in t["params"] for t in c["trials"])
    for t in c["trials"]:
        assert t["samples"] == t["epochs"] * rows and t["cpu_s"] > 0 and (t["test_auc"] is None) == (
            t["state"] == "pruned")


def test_grids_are_the_products(tmp_path):
    """DCN, FinalMLP, AutoInt+ replay conf/grids/bars/frappe_x1 (FinalMLP's explicit point list: one categorical
    over the point index); DNN the borrowed DCN axes; the protocol keys stay out of set:."""
    from bars import grids

    for m in ("dcn", "finalmlp", "autoint_plus"):
        g, p = B.load_study_grid(m), grids.load_grid(m, split="frappe_x1")
        assert g.points == p.points and not set(g.set) & set(B._NOT_SET)
        assert B.study_grid(tmp_path, "d", m).points == g.points  # grid.json round trip
        assert B.study_grid(tmp_path, "d", m).points == g.points  # ... read back
    assert B.load_study_grid("dnn").size == 18 and "model.params.hidden_units" in B.load_study_grid("dnn").set
    # FinalMLP's contexts name Frappe fields: renamed for the other datasets (the model refuses unknown fields)
    ml = B.study_grid(tmp_path, "movielens_small", "finalmlp")
    assert {tuple(p["model.params.fs2_context"]) for p in ml.points} == {("movie",), ()} and "item->movie" in \
        ml.meta["note"] and B.for_data(B.load_study_grid("dcn"), "synthetic").points == B.load_study_grid("dcn").points
    import optuna

    fm = B.load_study_grid("finalmlp")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    study.optimize(lambda t: seen.append(B.grid_space_suggest(fm)(t)) or 0.0, n_trials=30)
    assert all(p in fm.points for p in seen) and len({json.dumps(p, sort_keys=True) for p in seen}) > 5


def _trial(samples, cpu, val, test, state="complete"):
    return {"state": state, "epochs": 1, "samples": samples, "cpu_s": cpu, "val_aucs": [val], "val_auc": val,
            "test_auc": test if state == "complete" else None, "params": {}}


def _cell(out, strategy, seed, trials, fraction=1.0):
    meta = {"data": "d", "model": "m", "train_rows": 100, "epochs_cap": 3, "grid_points": 3, "grid_source": "src",
            "grid_note": "", "grid_budget": {"samples": 300.0, "cpu_s": 30.0}, "fraction": fraction, "overrides": [],
            "strategy": strategy, "seed": seed}
    B.write_cell(B.cell_path(out, "d", "m", strategy, seed), meta, trials)


def test_report_on_a_partial_result_folder(tmp_path):
    out = tmp_path / "out"
    _cell(out, "grid", 0, [_trial(100, 10, 0.70, 0.60), _trial(100, 10, 0.80, 0.61), _trial(100, 10, 0.75, 0.62)])
    _cell(out, "random", 0, [_trial(50, 5, 0.81, 0.71), _trial(50, 5, 0.90, None, "pruned"),
                             _trial(200, 20, 0.85, 0.72)])
    # a run of a third of the grid's compute that spent its CPU share (10 CPU-s) after 50 samples
    _cell(out, "tpe", 0, [_trial(50, 12, 0.79, 0.70)], fraction=1 / 3)
    docs = tmp_path / "docs" / "sweeps.md"
    docs.parent.mkdir()
    docs.write_text(f"# Sweeps\nhand-written text\n\n{R.BEGIN}\nold table\n{R.END}\n\nmore text\n")
    expected = {"data": ["d"], "models": ["m"], "strategies": ["grid", "random", "tpe"], "seeds": 2}
    text = R.write_report(out, expected, docs=docs)

    s = R.summarize(R.load_cells(out))[("d", "m")]
    assert s["grid_best"] == 0.80 and s["grid_test"] == 0.61
    grid, rnd = s["strategies"]["grid"]["samples"], s["strategies"]["random"]["samples"]
    # fractions 1/9, 1/3, 2/3, 1 of 300 samples: the grid's first trial ends at 100 (= 1/3)
    assert grid["val"] == [None, 0.70, 0.80, 0.80] and grid["test"] == [None, 0.60, 0.61, 0.61]
    # random: 0.81 at 50 samples; the pruned 0.90 never counts; 0.85 after 300
    assert rnd["val"] == [None, 0.81, 0.81, 0.85] and rnd["test"] == [None, 0.71, 0.71, 0.72]
    assert rnd["reach"] == 1 and grid["reach"] == 0
    assert "PARTIAL: 3 of 6 cells" in text and "d/m/grid/seed1, d/m/random/seed1, d/m/tpe/seed1" in text
    # samples: short of 1/3 (100) after its CPU share was spent -> its final best, starred; nothing after 1/3
    assert "| TPE, no pruning (second default) | 1 | – | 0.7900* | – | – | – | 0.7000* | – | – | 0/1 | 1.0 (0.0) |" in text
    assert "| random | 1 | – | 0.8100 | 0.8100 | 0.8500 | – | 0.7100 | 0.7100 | 0.7200 | 1/1 | 3.0 (1.0) |" in text
    new = docs.read_text()
    assert new.startswith("# Sweeps\nhand-written text\n") and new.endswith("more text\n")
    assert "old table" not in new and "PARTIAL: 3 of 6 cells" in new
    assert (docs.parent / "img" / "sweeps_grid_d_samples.png").stat().st_size > 1000
    assert "Space: **grid**" in new
    # the goal table: TPE against random (no default cell here): it never reaches the grid's best 0.80 by 1/3 and
    # is below random at 1/3 of the samples (0.79 vs 0.81)
    rows = R.verdict(R.summarize(R.load_cells(out)), ("tpe_median", "tpe"))
    assert rows[2].startswith("| d / m | 0.8000 | TPE, no pruning (second default) | 0/1; 0/1 | 0.7900; 0.8100; 0.7000 | 1/3; ")
    assert rows[2].endswith("| –; – |") and len(rows) == 3  # one seed: no paired difference
    # a run that stopped before a budget shows no value there (not its last one)
    assert R.best_at([_trial(50, 5, 0.9, 0.8)], "samples", 100) == (None, None, False)
    # ... unless it stopped because its budget in the other unit was spent: its final best, marked short
    assert R.best_at([_trial(50, 5, 0.9, 0.8)], "samples", 100, exhausted=True) == (0.9, 0.8, True)
