"""Method runs used like plain runs (issue 13): `bars predict`, `bars export` and `bars reproduce` of an OptFS, a
DNIS, an OptEmbed and an OptInter run (by the method's run id or its final stage's), the baked model scoring exactly
as the trained one, and the size columns (effective parameters, model bytes) from the run to the leaderboard. Real training
on the shipped movielens_small (small DeepFM, one epoch a stage), a real MLflow store."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from _movielens import movielens_raw_splits
from mlflow.tracking import MlflowClient

from bars.config import PROJECT_ROOT, compose
from bars.recorded import RecordedRunError, load_recorded_run

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

METHODS = {  # settings that make each method select something in a short run
    "optfs": ["method=optfs", "method.search_epochs=2", "method.rewind_epoch=1", "method.sparsity=1e-3",
              "method.gate_init=0.02"],
    "dnis": ["method=dnis", "method.search_epochs=1", "method.alpha_lr=0.05", "method.keep_ratio=0.5"],
    # thresholds that move in one epoch (rows pruned), a short evolution (mixed dimensions)
    "optembed": ["method=optembed", "method.threshold_lr=1.0", "method.iterations=2", "method.keep_num=2",
                 "method.mutation_num=2", "method.crossover_num=2"],
    # pairs memorised (some hashed: more known values than hash_rows), factorised and dropped
    "optinter": ["method=optinter", "method.search_epochs=1", "method.min_count=2", "method.hash_rows=300",
                 "method.arch_lr=0.05"],
}
KEPT = {"optfs": "features", "dnis": "embedding_params", "optembed": "embedding_params", "optinter": "pairs"}  # the size figure's prefix


def _quiet(*_):
    return None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store with a plain DeepFM run and a run of each method in METHODS over it (stage final, seed 2021)."""
    from bars.run import train_one

    root = tmp_path_factory.mktemp("methods_use")
    overrides = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"paths.data={root / 'data'}",
                 f"paths.checkpoints={root / 'ckpt'}", f"paths.predictions={root / 'predictions'}",
                 f"paths.exports={root / 'exports'}", f"paths.results={root / 'results'}"]
    base = ["model=deepfm", "data=movielens_small", "model.params.hidden_units=[16]", "train.max_epochs=1",
            "train.batch_size=512", "train.num_threads=1", "train.device=cpu", *overrides]
    runs = {"plain": train_one(compose(base), quiet=True, extra_tags={"stage": "final"})}
    for name, ov in METHODS.items():
        runs[name] = train_one(compose([*base, *ov]), quiet=True, extra_tags={"stage": "final"})
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    stages = {}
    for name in METHODS:
        pid = runs[name].run_id
        kids = client.search_runs([client.get_run(pid).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{pid}'")
        stages[name] = {k.data.tags["stage"]: k.info.run_id for k in kids}
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "overrides": overrides, "runs": runs,
            "stages": stages, "client": client}


@pytest.fixture(scope="module")
def raw_test(store, tmp_path_factory):
    rows = movielens_raw_splits()["test"]
    path = tmp_path_factory.mktemp("raw") / "test_ratings.csv"
    rows.select("rating", "timestamp", "userId", "movieId").write_csv(path)
    return path


def _stages(method):
    from bars.methods import METHODS as REGISTERED

    return list(importlib.import_module(REGISTERED[method][1]).STAGES)


def _first_stage(method):
    return _stages(method)[0]


def _unbaked(rec):
    """The final stage's wrapper with its checkpoint, hooks on (what the run trained and tested)."""
    from bars.methods import final_model
    from bars.models import build
    from bars.train import load_checkpoint

    backbone = build(str(rec.cfg.model.name), rec.spec, dict(rec.cfg.model.params))
    return load_checkpoint(final_model(rec.cfg, backbone, rec.spec, checkpoint=rec.checkpoint), rec.checkpoint).eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_the_baked_model_scores_bitwise_as_the_trained_method_and_the_sizes_are_recorded(store, method):
    from bars.data.loader import load_dataset
    from bars.train import predict

    cfg = compose(store["overrides"])
    rec = load_recorded_run(store["runs"][method].run_id, cfg)
    assert rec.method == method and rec.record.run_id == store["stages"][method]["retrain"]
    assert rec.model_label == f"deepfm+{method}" and "through its final stage run" in rec.describe()
    if method == "optinter":  # the backbone rebuilt with its pair slots, the pair layer inside its embedding
        assert type(rec.model).__name__ == "PairBackbone" and type(rec.model.backbone).__name__ == "DeepFM"
    else:
        assert type(rec.model).__name__ == "DeepFM"  # plain backbone: nothing of the method's layer is left
    assert not any("forward" in vars(m) for m in rec.model.modules())  # no patched forward: it traces, it copies
    test = load_dataset(rec.folder, splits=("test",)).splits["test"]
    baked = predict(rec.model, test, 4096, torch.device("cpu"))
    trained = predict(_unbaked(rec), test, 4096, torch.device("cpu"))
    assert torch.equal(baked, trained)
    # sizes: the parent run records the final stage's, counted on the baked model
    m = store["client"].get_run(store["runs"][method].run_id).data.metrics
    plain = store["client"].get_run(store["runs"]["plain"].run_id).data.metrics
    n_backbone = sum(p.numel() for p in rec.model.parameters())
    if method == "optinter":  # nothing folded away: the pair tables are the model's own parameters
        assert m["pairs_memorise"] > 0 and m["pairs_factorise"] > 0 and m["pairs_naive"] > 0
        assert m["pairs_hashed"] > 0  # the hashed lookup is exercised too
        assert m["params_removed"] == 0 and m["params_effective"] == n_backbone
        assert m["model_bytes"] > plain["model_bytes"]
        return
    zero = sum(int((p == 0).sum()) for n, p in rec.model.named_parameters() if "embedding" in n)
    assert m["params_effective"] == n_backbone - m["params_removed"] and m["params_removed"] > 0
    assert m["params_removed"] <= zero  # every removed entry is a zero table entry of the baked model
    if method == "optembed":  # both of its masks are exercised: pruned rows and fewer dimensions
        assert m["embedding_rows_kept_count"] < m["embedding_rows_total"]
        assert min(m[f"dims_{f}"] for f in rec.model.embedding.cat_names) < int(rec.cfg.model.params.embedding_dim)
    if method in ("dnis", "optembed"):  # removed = the masked (row, dim) entries of the d-wide tables
        assert m["params_removed"] == m["embedding_params_total"] - m["embedding_params_kept_count"]
    else:  # a closed feature value loses its row in the d-wide table and in the first-order (dim 1) table
        closed = m["features_total"] - m["features_kept_count"]
        assert m["params_removed"] == closed * (int(rec.cfg.model.params.embedding_dim) + 1)
    assert m["model_bytes"] == pytest.approx(plain["model_bytes"], rel=0.01)  # the masks do not shrink storage
    assert plain["model_bytes"] == (store["root"] / "ckpt" / store["runs"]["plain"].run_id / "best.pt").stat().st_size


@pytest.mark.parametrize("method", list(METHODS))
def test_predict_a_method_run_by_its_id_or_its_final_stage_gives_its_test_metrics_exactly(store, raw_test, method):
    from bars.predict import predict_file

    cfg = compose(store["overrides"])
    parent = store["runs"][method].run_id
    final = store["stages"][method]["retrain"]
    recorded = store["client"].get_run(parent).data.metrics
    outs = []
    for rid in (parent, final):
        r = predict_file(rid, raw_test, cfg, progress=False, say=_quiet)
        for k in ("auc", "logloss", "gauc"):
            assert r.metrics[f"predict_{k}"] == recorded[f"test_{k}"], (rid, k)
        child = store["client"].get_run(r.predict_run_id)
        assert child.data.tags["mlflow.parentRunId"] == rid and child.data.tags["model"] == f"deepfm+{method}"
        outs.append(pl.read_parquet(r.out))
    assert outs[0].equals(outs[1])
    first = _first_stage(method)
    search = store["stages"][method][first]
    with pytest.raises(RecordedRunError, match=rf"run {search} is the '{first}' stage of {method} run {parent}: its "
                                               rf"weights are not the method's result; use the method run {parent}"):
        predict_file(search, raw_test, cfg, progress=False, track=False, say=_quiet)


@pytest.mark.parametrize("method", list(METHODS))
def test_export_a_method_run_bakes_the_selection_in_and_scores_as_the_trained_method(store, method, tmp_path):
    import onnxruntime as ort

    from bars.export import FORMATS, SAMPLE, SIGNATURE, TOLERANCE, export_run

    cfg = compose(store["overrides"])
    parent = store["runs"][method].run_id
    rec = load_recorded_run(parent, cfg)
    trained = _unbaked(rec)
    for fmt in FORMATS:
        r = export_run(parent, fmt, cfg, say=_quiet)  # verified there: the export against the baked model
        sig = json.loads((r.out / SIGNATURE).read_text())
        assert sig["run"]["model"] == f"deepfm+{method}" and sig["run"]["method"] == method
        assert sig["run"]["final_stage_run"] == store["stages"][method]["retrain"]
        sample = np.load(r.out / SAMPLE)
        with torch.inference_mode():  # the trained method (hooks, unbaked) on the sample rows
            want = torch.sigmoid(trained({n: torch.from_numpy(sample[f"in/{n}"]) for n in sample["names"]})).numpy()
        assert np.abs(sample["out/probability"] - want).max() <= TOLERANCE
        if fmt == "onnx":
            session = ort.InferenceSession(str(r.out / "model.onnx"), providers=["CPUExecutionProvider"])
            got = session.run(["probability"], {n: sample[f"in/{n}"] for n in sample["names"]})[0]
            assert np.abs(got - want).max() <= TOLERANCE
    # the CLI: a stage that is not the final one stops with the reason, exit 1, no traceback
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    first = _first_stage(method)
    bad = subprocess.run([sys.executable, "-m", "bars.cli", "export", f"run_id={store['stages'][method][first]}",
                          "format=onnx", *store["overrides"]], check=False, capture_output=True, text=True,
                         cwd=PROJECT_ROOT, env=env)
    assert bad.returncode == 1 and f"is the '{first}' stage of" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("method", list(METHODS))
def test_compress_refuses_a_method_run_with_the_reason(store, method):
    from bars.compress import CompressError, compress_run

    with pytest.raises(CompressError, match=rf"is a {method} run \(deepfm\+{method}\): bars compress supports plain "
                                            "runs"):
        compress_run(store["runs"][method].run_id, compose(store["overrides"]), say=_quiet)


def test_a_method_without_the_final_model_hook_is_a_clear_error(store, monkeypatch):
    from bars.methods import dnis

    monkeypatch.delattr(dnis, "final_model")
    with pytest.raises(RecordedRunError, match=r"method 'dnis' cannot be loaded for scoring: bars.methods.dnis has "
                                               r"no final_model"):
        load_recorded_run(store["runs"]["dnis"].run_id, compose(store["overrides"]))


@pytest.mark.parametrize("method", list(METHODS))
def test_reproduce_a_method_run_reruns_every_stage_and_matches(store, method):
    from bars.reproduce import reproduce

    cfg = compose(store["overrides"])
    parent = store["runs"][method].run_id
    lines: list[str] = []
    stages = _stages(method)
    c = reproduce(store["stages"][method][stages[0]], cfg, out=lines.append)  # a stage's id: the whole method
    assert c.identical and c.run_id == parent and c.new_run_id not in (None, parent)
    keys = [row[0] for row in c.rows]
    what = KEPT[method]
    assert {"test_auc", "val_auc", f"{what}_kept", f"{what}_kept_count", f"{what}_total", "params_effective",
            *(f"{s}_epochs" for s in stages)} <= set(keys)
    assert any("reproducing the whole method" in x for x in lines)
    new = store["client"].get_run(c.new_run_id)
    assert new.data.tags["stage"] == "reproduce" and new.data.tags["reproduce_of"] == parent
    assert new.data.tags["method_folder"] != store["client"].get_run(parent).data.tags["method_folder"]
    kids = store["client"].search_runs([new.info.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{c.new_run_id}'")
    assert sorted(k.data.tags["stage"] for k in kids) == sorted(stages)  # every stage ran again


def test_the_board_shows_method_rows_beside_the_backbone_with_the_size_columns(store, tmp_path):
    import csv
    import io

    from bars.leaderboard import build
    from bars.leaderboard_render import render_board_html, render_csv, render_markdown
    from bars.records import load_runs

    board = build(load_runs(store["uri"], ["movielens_small"]), published={})["movielens_small"]
    rows = {r.model: r for r in board.rows}
    assert set(rows) == {"deepfm", *(f"deepfm+{m}" for m in METHODS)}
    metrics = {k: store["client"].get_run(store["runs"][k].run_id).data.metrics for k in ("plain", *METHODS)}
    assert rows["deepfm"].params_effective == metrics["plain"]["n_params"] == rows["deepfm"].n_params
    assert rows["deepfm"].model_bytes == metrics["plain"]["model_bytes"]
    for name in METHODS:
        row = rows[f"deepfm+{name}"]
        assert row.params_effective == metrics[name]["params_effective"]
        if name != "optinter":  # OptInter adds pair tables: more parameters than its backbone
            assert row.params_effective < rows["deepfm"].n_params
        assert row.model_bytes == metrics[name]["model_bytes"] and row.kept_fraction is not None
    md = render_markdown(board, "test")
    header = next(line for line in md.splitlines() if line.startswith("| Model |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    # the size columns follow Params, the existing order otherwise unchanged
    i = cols.index("Params")
    assert cols[i + 1: i + 3] == ["Eff. params⁴", "Model bytes⁴"] and cols[i + 3] == "s/epoch"
    assert cols[:3] == ["Model", "Test AUC (mean ± std)", "Test logloss (mean ± std)"]
    line = next(x for x in md.splitlines() if x.startswith("| deepfm+dnis |"))
    cells = dict(zip(cols, [c.strip() for c in line.strip("|").split("|")], strict=True))
    assert cells["Eff. params⁴"] == f"{round(metrics['dnis']['params_effective']):,}"
    assert cells["Model bytes⁴"] == f"{round(metrics['dnis']['model_bytes']):,}"
    assert "⁴ Size. Model bytes" in md
    table = {r["model"]: r for r in csv.DictReader(io.StringIO(render_csv(board)))}
    assert list(table["deepfm"])[-2:] == ["params_effective", "model_bytes"]
    assert float(table["deepfm+optfs"]["params_effective"]) == metrics["optfs"]["params_effective"]
    html = render_board_html(board, "test", ())
    assert 'data-key="params_effective"' in html and 'data-key="model_bytes"' in html
    # a board without method rows keeps its columns (model bytes only, where the runs recorded it)
    plain = build([r for r in load_runs(store["uri"], ["movielens_small"]) if not r.tags.get("method")],
                  published={})["movielens_small"]
    text = render_markdown(plain, "test")
    assert "Eff. params" not in text and "| Model bytes⁴ |" in text
