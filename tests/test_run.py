"""bars.run end to end on a tiny tabular dataset (and movielens_small, slow), read back through MLflow's API."""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bars.config import PROJECT_ROOT, compose
from bars.run import RunResult, train_one


def _write_csv(path: Path, n: int = 600, price: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "user", "item", "price", "hist"])
        for _ in range(n):
            u, it = int(rng.integers(0, 30)), int(rng.integers(0, 20))
            y = int((u % 3 == 0) ^ bool(rng.random() < 0.2))
            hist = "|".join(str(x) for x in rng.integers(0, 10, int(rng.integers(1, 4))))
            w.writerow([y, f"u{u}", f"i{it}", price or f"{rng.random():.3f}", hist])
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path | str]:
    root = tmp_path_factory.mktemp("run")
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "csv": _write_csv(root / "tiny.csv")}


def _cfg(env, *extra: str, csv_file: Path | None = None):
    root = env["root"]
    return compose([
        "model=dcn", "data=tabular", f"data.file={csv_file or env['csv']}", "data.categorical=[user,item]",
        "data.numeric=[price]", "data.sequence=[hist]", "model.params.dnn_hidden_units=[16]",
        "train.batch_size=128", "train.max_epochs=2", "train.num_threads=1", f"tracking.uri={env['uri']}",
        "tracking.experiment=tiny", f"paths.data={root / 'data'}", f"paths.checkpoints={root / 'ckpt'}", *extra,
    ])


def test_train_one_records_everything(env):
    client = MlflowClient(tracking_uri=env["uri"])
    seen: list[int] = []

    def on_epoch(log):  # runs after the epoch was handed to the run's writer (in the store before the run ends)
        seen.append(log.epoch)

    r = train_one(_cfg(env), on_epoch=on_epoch, quiet=True)
    assert isinstance(r, RunResult) and r.run_id
    assert seen == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(r.run_id, "val_auc")) == [1, 2, 2]  # epochs + best
    assert r.epochs == 2 and 1 <= r.best_epoch <= 2 and r.n_params > 0 and r.device == "cpu"
    assert r.checkpoint is not None and r.checkpoint == env["root"] / "ckpt" / r.run_id / "best.pt"
    assert r.checkpoint.exists()

    run = client.get_run(r.run_id)
    assert run.info.status == "FINISHED"
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["model.name"] == "dcn" and p["train.max_epochs"] == "2" and p["data.name"] == "tabular"
    assert p["model.params.dnn_hidden_units"] == "[16]"
    assert t["model"] == "dcn" and t["data"] == "tabular" and t["seed"] == "2021" and t["stage"] == "single"
    assert len(t["data_fingerprint"]) >= 8 and t["device"] == "cpu" and t["n_params"] == str(r.n_params)
    assert t["cuda_graph"] == "off"  # train.cuda_graph's outcome (off by default; no effect on the CPU)
    if platform.libc_ver()[0] == "glibc":  # train.reuse_freed_memory (default true) took effect (bars.heap)
        assert t["host_heap"].startswith("reuse (glibc "), t["host_heap"]
    for key in ("git_commit", "python", "torch", "cuda", "hostname", "pid", "bars_version", "command"):
        assert t.get(key), key
    for key in ("train_loss", "val_auc", "val_logloss", "lr", "samples_per_s"):
        assert [h.step for h in client.get_metric_history(r.run_id, key)][:2] == [1, 2], key
    # the final values are MLflow's latest ones
    for key in ("val_auc", "val_logloss", "test_auc", "test_logloss"):
        assert m[key] == pytest.approx(r.metrics[key]), key
    assert m["val_auc"] == pytest.approx(max(h.val_auc for h in r.history))
    for key in ("n_params", "epochs", "best_epoch", "wall_seconds", "seconds_per_epoch"):
        assert key in m, key
    assert 0.0 <= m["test_auc"] <= 1.0
    names = {a.path for a in client.list_artifacts(r.run_id)}
    assert {"config.yaml", "feature_spec.json", "manifest.json", "learning_curve.png", "env.txt"} <= names
    from bars.records import load_run_config

    cfg_back = load_run_config(r.run_id, env["uri"])
    assert cfg_back.model.name == "dcn" and cfg_back.train.max_epochs == 2


def test_runs_are_tagged_with_the_model_config_id_and_class(env):
    """A variant config of a registered model: tagged model=<id>, model_class=<registry key>, BARS name as a
    param (what the leaderboard reads)."""
    r = train_one(_cfg(env, "model.id=crossnet", "model.bars_name=CrossNet", "train.max_epochs=1"), quiet=True)
    run = MlflowClient(tracking_uri=env["uri"]).get_run(r.run_id)
    assert run.data.tags["model"] == "crossnet" and run.data.tags["model_class"] == "dcn"
    assert run.data.params["model.bars_name"] == "CrossNet" and run.info.run_name == "crossnet__tabular__s2021"


def test_child_run_and_failure_in_callback(env):
    """A sweep trial: child of a parent run, tagged stage=trial; an exception from on_epoch ends it FAILED."""
    from bars.tracking import Tracker

    tracker = Tracker(env["uri"], "tiny")
    with tracker.run("sweep", tags={"stage": "sweep"}) as parent:

        def prune(log):
            raise RuntimeError(f"pruned at epoch {log.epoch}")

        with pytest.raises(RuntimeError, match="pruned at epoch 1") as info:
            train_one(_cfg(env), on_epoch=prune, parent_run_id=parent.run_id,
                      extra_tags={"stage": "trial", "trial": 0}, quiet=True)
    assert any("ended FAILED" in n for n in getattr(info.value, "__notes__", []))
    client = MlflowClient(tracking_uri=env["uri"])
    exp = client.get_experiment_by_name("tiny")
    [child] = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert child.info.status == "FAILED"
    assert child.data.tags["stage"] == "trial" and child.data.tags["trial"] == "0"
    assert child.data.tags["error"] == "RuntimeError: pruned at epoch 1"
    assert [h.step for h in client.get_metric_history(child.info.run_id, "val_auc")] == [1]


def test_tracking_disabled(env, tmp_path):
    uri = f"sqlite:///{tmp_path / 'never.db'}"
    r = train_one(_cfg(env, "tracking.enabled=false", f"tracking.uri={uri}", "train.max_epochs=1"), quiet=True)
    assert r.run_id is None and r.epochs == 1 and "test_auc" in r.metrics
    assert not (tmp_path / "never.db").exists()


def test_nan_loss_ends_failed(env):
    """Infinite inputs make the loss NaN: the run stops with NonFiniteLossError, recorded in MLflow."""
    from bars.train import NonFiniteLossError

    bad = _write_csv(env["root"] / "bad.csv", n=300, price="inf")
    with pytest.raises(NonFiniteLossError) as info:
        train_one(_cfg(env, "tracking.experiment=nan", csv_file=bad), quiet=True)
    client = MlflowClient(tracking_uri=env["uri"])
    [run] = client.search_runs([client.get_experiment_by_name("nan").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error_type"] == "NonFiniteLossError"
    assert run.info.run_id in " ".join(info.value.__notes__)


def test_cli_failure_is_clear_and_non_zero(env):
    """`bars train` with a bad model key: a clear error naming the key, exit code 2, and no MLflow run (the config
    is validated before anything is opened)."""
    root = env["root"]
    cmd = [sys.executable, "-m", "bars.cli", "train", "model=dcn", "data=tabular", f"data.file={env['csv']}",
           "data.categorical=[user,item]", "+model.params.bogus_key=1", f"tracking.uri={env['uri']}",
           "tracking.experiment=cli", f"paths.data={root / 'data'}", f"paths.checkpoints={root / 'ckpt'}"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bars train: error: invalid config" in proc.stderr and "bogus_key" in proc.stderr
    assert "Traceback" not in proc.stderr and "cross_layers" in proc.stderr  # the valid params are listed
    client = MlflowClient(tracking_uri=env["uri"])
    assert client.get_experiment_by_name("cli") is None  # no run, not even its experiment


@pytest.mark.slow
def test_movielens_small_one_epoch(tmp_path):
    cfg = compose(["model=dcn", "data=movielens_small", "train.max_epochs=1",
                   f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"paths.data={tmp_path / 'data'}",
                   f"paths.checkpoints={tmp_path / 'ckpt'}"])
    r = train_one(cfg)
    assert r.metrics["test_auc"] > 0.7
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(r.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data"] == "movielens_small"


def test_run_records_where_its_wall_time_went(env):
    """The phase breakdown (bars.timing) is returned and logged as time_<phase>_s metrics: every phase of the
    run is there, none negative, and they add up to no more than the run's wall time (no timing thresholds)."""
    import time

    from bars.timing import RUN_PHASES

    t0 = time.perf_counter()
    r = train_one(_cfg(env, "tracking.experiment=phases"), quiet=True)
    wall = time.perf_counter() - t0
    ph = r.phases
    for k in ("config", "prepare", "load", "build", "tracking", "epoch_bookkeeping", "train", "valid", "checkpoint",
              "test", "artifacts"):
        assert k in ph and k in RUN_PHASES, k
    assert all(v >= 0 for v in ph.values()), ph
    assert ph["train"] > 0 and ph["valid"] > 0 and ph["test"] > 0
    parts = sum(v for k, v in ph.items() if k != "total")
    assert parts == pytest.approx(ph["total"], rel=1e-9, abs=1e-9) and ph["total"] <= wall
    assert r.seconds <= ph["total"]

    m = MlflowClient(tracking_uri=env["uri"]).get_run(r.run_id).data.metrics
    logged = {k[len("time_"):-len("_s")]: v for k, v in m.items() if k.startswith("time_") and k.endswith("_s")}
    assert {"train", "valid", "test", "tracking", "total", "fixed"} <= set(logged)
    # recorded at the final tracking call: the run's end comes after, so the recorded total is the smaller
    assert sum(v for k, v in logged.items() if k not in ("total", "fixed")) == pytest.approx(logged["total"])
    assert logged["total"] <= ph["total"] and logged["fixed"] == pytest.approx(
        logged["total"] - logged["train"] - logged["valid"])
    assert m["wall_seconds"] <= logged["total"]

    r_off = train_one(_cfg(env, "tracking.enabled=false"), quiet=True)  # untracked: the same breakdown
    assert r_off.run_id is None and r_off.phases["total"] >= sum(v for k, v in r_off.phases.items() if k != "total")


def _history(n: int = 2, multi: bool = False):
    from bars.train import EpochLog

    def val(i):
        return {"auc_a": 0.6 + 0.01 * i, "auc_b": 0.7} if multi else {"auc": 0.7 + 0.01 * i, "logloss": 0.5 / 3}
    return [EpochLog(epoch=i, train_loss=0.5 / i, val=val(i), monitor=0.7 + 0.01 * i / 3, lr=1e-3, samples_per_s=1e4,
                     seconds=1.0, improved=i % 2 == 1, strikes=0) for i in range(1, n + 1)]


def test_end_artifacts_render_in_the_helper_process_and_never_fail_the_run(monkeypatch):
    """The learning curve is rendered by the render helper (another process) while the test pass runs: the same
    PNG bytes as rendering it in place (single- and multi-task); when the helper is unavailable the run renders
    it itself; a rendering error is a warning, history.json is still there."""
    import json

    from bars import plotting
    from bars import run as run_mod

    for hist in (_history(3), _history(2, multi=True)):
        in_place = run_mod.render_png(run_mod.learning_curve(hist, "t"))
        files = run_mod._EndArtifacts(hist, "t").files()
        assert files["learning_curve.png"] == in_place
        assert [h["epoch"] for h in json.loads(files["history.json"])] == [h.epoch for h in hist]
    helper = plotting.renderer()._proc
    assert helper is not None and helper.poll() is None  # the helper rendered them (and stays for the next run)
    assert helper.pid != os.getpid()

    seen: list[int] = []
    real = run_mod.learning_curve

    def spy(history, title=""):
        seen.append(len(history))
        return real(history, title)

    monkeypatch.setattr(run_mod, "learning_curve", spy)
    files = run_mod._EndArtifacts(_history(2), "t").files()
    assert seen == [] and "learning_curve.png" in files  # the helper did it
    monkeypatch.setenv("BARS_RENDER", "inline")  # no helper: rendered here, same bytes
    files = run_mod._EndArtifacts(_history(2), "t").files()
    assert seen == [2] and files["learning_curve.png"] == run_mod.render_png(real(_history(2), "t"))

    def broken(history, title=""):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(run_mod, "learning_curve", broken)
    with pytest.warns(RuntimeWarning, match="not rendered: RuntimeError: no fonts"):
        files = run_mod._EndArtifacts(_history(2), "t").files()
    assert list(files) == ["history.json"]


def test_render_helper_failures_fall_back_to_rendering_in_place(monkeypatch):
    """A helper that dies, cannot start, or answers an error: the run still gets its PNG (rendered in place); an
    abandoned request's reply is dropped, not handed to the next run."""
    from bars import plotting
    from bars import run as run_mod

    r = plotting.Renderer()  # a private one: the process's helper is left alone
    monkeypatch.setattr(plotting, "_RENDERER", r)
    hist = _history(2)
    want = run_mod.render_png(run_mod.learning_curve(hist, "t"))

    first = run_mod._EndArtifacts(hist, "first")  # abandoned (its run failed): its reply must not leak
    first.abandon()
    assert run_mod._EndArtifacts(hist, "t").files()["learning_curve.png"] == want
    assert r._replies == {} and r._dropped == set()

    t = r.submit("not json", "x")  # the helper answers an error: result raises it
    with pytest.raises(RuntimeError, match="JSONDecodeError"):
        r.result(t)

    curve = run_mod._EndArtifacts(hist, "t")
    r._proc.kill()  # the helper dies before answering: rendered in place
    r._proc.wait()
    assert curve.files()["learning_curve.png"] == want
    assert r._broken is not None  # not used again by this process
    assert run_mod._EndArtifacts(hist, "t").files()["learning_curve.png"] == want

    r2 = plotting.Renderer()
    monkeypatch.setattr(plotting, "_RENDERER", r2)
    monkeypatch.setattr(r2, "_command", lambda: ["/nonexistent/python"])  # cannot start
    assert run_mod._EndArtifacts(hist, "t").files()["learning_curve.png"] == want
    r.close()
