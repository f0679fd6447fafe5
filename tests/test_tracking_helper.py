"""The tracking helper (bars.tracking_helper): a run written through it records what an in-process run records; the
helper never imports torch; a helper that dies mid-run loses nothing; a store that cannot create the run fails
the run before training; its warnings reach the run's process; ``bars train`` itself never imports mlflow and
its store housekeeping (runs of dead processes ended) still happens. Real processes, real SQLite stores."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from _reliability import command_env, tiny_args, tiny_csv
from mlflow.tracking import MlflowClient

from bars import tracking_helper as th
from bars.config import compose
from bars.run import train_one
from bars.tracking import Tracker, TrackingWarning

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_helpers_left():
    yield
    th.close_all()


def _cfg(tmp_path: Path, *extra: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return compose(tiny_args(tmp_path / "proj", tiny_csv(tmp_path / "tiny.csv"), "train.max_epochs=2", *extra))


def _record(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
               for k in ("train_loss", "val_auc", "lr")}
    arts = sorted(a.path for a in client.list_artifacts(run_id))
    return {"status": run.info.status, "params": dict(run.data.params), "tags": dict(run.data.tags),
            "metrics": dict(run.data.metrics), "history": history, "artifacts": arts}


def test_plain_values_unpickle_without_imports():
    import torch

    value = {"v": torch.__version__, "n": np.int64(3), "x": np.float32(0.5), "t": torch.tensor(2.5),
             "p": Path("/a"), "l": (1, "b", None), "o": object}
    out = th.plain(value)
    assert type(out["v"]) is str and out["v"] == str(torch.__version__)
    assert out["n"] == 3 and type(out["n"]) is int
    assert out["x"] == 0.5 and type(out["x"]) is float
    assert out["t"] == 2.5 and out["p"] == Path("/a") and out["l"] == [1, "b", None]
    assert out["o"] == str(object)


def test_a_run_through_the_helper_records_what_an_in_process_run_records(tmp_path):
    results = {}
    for mode in ("false", "true"):
        cfg = _cfg(tmp_path / mode, f"tracking.helper={mode}")
        res = train_one(cfg, quiet=True)
        client = MlflowClient(tracking_uri=res.tracking_uri)
        results[mode] = (res, _record(client, res.run_id))
    (r0, a), (r1, b) = results["false"], results["true"]
    assert a["status"] == b["status"] == "FINISHED"
    assert a["artifacts"] == b["artifacts"] and "learning_curve.png" in b["artifacts"]
    assert r0.metrics["test_auc"] == r1.metrics["test_auc"]  # the same training: tracking is off its path
    assert set(a["metrics"]) == set(b["metrics"]) and a["metrics"]["test_auc"] == b["metrics"]["test_auc"]
    assert a["history"] == b["history"] and [s for s, _ in b["history"]["train_loss"]] == [1, 2]
    differ = {"paths.root", "data.file", "tracking.uri", "tracking.spool_dir", "paths.data", "paths.checkpoints",
              "paths.sweeps", "paths.results", "tracking.helper"}
    assert {k: v for k, v in a["params"].items() if k not in differ and str(tmp_path) not in v} == \
        {k: v for k, v in b["params"].items() if k not in differ and str(tmp_path) not in v}
    assert set(a["tags"]) == set(b["tags"])
    assert b["tags"]["pid"] == str(os.getpid())  # the run's process, not the helper's
    helper = th.start(th.options_of(_cfg(tmp_path / "true", "tracking.helper=true")))
    probe = helper.call("probe", {})
    assert probe["pid"] != os.getpid() and probe["torch"] is False  # the helper never imports torch


def test_a_helper_that_dies_mid_run_loses_nothing(tmp_path, capfd):
    cfg = _cfg(tmp_path, "tracking.helper=true", "train.max_epochs=3", "train.max_strikes=5")
    seen = []

    def kill_after_first(log):
        seen.append(log.epoch)
        if log.epoch == 1:
            th.start(th.options_of(cfg)).kill()

    res = train_one(cfg, quiet=True, on_epoch=kill_after_first)
    assert "writes run" in capfd.readouterr().err
    rec = _record(MlflowClient(tracking_uri=res.tracking_uri), res.run_id)
    assert rec["status"] == "FINISHED"
    assert [s for s, _ in rec["history"]["train_loss"]] == [1, 2, 3]
    assert "test_auc" in rec["metrics"] and "learning_curve.png" in rec["artifacts"]
    assert seen == [1, 2, 3]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_store_that_cannot_create_the_run_fails_it_before_training(tmp_path):
    cfg = _cfg(tmp_path, "tracking.helper=true", f"tracking.uri=http://127.0.0.1:{_closed_port()}",
               "tracking.tries=1", "tracking.retry_wait=0")
    epochs = []
    with pytest.raises(th.TrackingError, match="127.0.0.1"):
        train_one(cfg, quiet=True, on_epoch=epochs.append)
    assert epochs == []


def test_the_helpers_tracking_warnings_reach_the_run(tmp_path):
    cfg = _cfg(tmp_path, "tracking.helper=true")
    tracker = th.tracker_for(cfg)
    assert isinstance(tracker, th.RemoteTracker)
    with tracker.run("warned") as run:
        with pytest.warns(TrackingWarning, match="not a number"):
            run.log({"x": "not-a-number", "y": 1.0}, step=1)
        with warnings.catch_warnings(record=True) as caught:  # a write nobody waits for warns from the reader
            warnings.simplefilter("always")
            run.log({"z": "nope"}, step=2, wait=False)
            run.flush()
        assert any(issubclass(w.category, TrackingWarning) and "not a number" in str(w.message) for w in caught)
    got = MlflowClient(tracking_uri=run.uri).get_run(run.run_id)
    assert got.data.metrics == {"y": 1.0} and got.info.status == "FINISHED"


def test_auto_uses_the_helper_only_in_a_bars_train_process(tmp_path):
    cfg = _cfg(tmp_path)  # tracking.helper=auto (the default) in a test process: in process, as sweeps and finals
    assert not th.wanted(cfg)
    assert isinstance(th.tracker_for(cfg), Tracker)


def test_bars_train_never_imports_mlflow_and_still_ends_dead_runs(tmp_path):
    root = tmp_path / "proj"
    args = tiny_args(root, tiny_csv(tmp_path / "tiny.csv"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    root.mkdir()
    stale = Tracker(uri, "tiny").start_run("stale", tags={"pid": "999999999", "pid_start": "1"})
    code = ("import sys; from bars.cli import main; rc = main(sys.argv[1:]); "
            "print('MLFLOW_LOADED', 'mlflow' in sys.modules, 'PANDAS_LOADED', 'pandas' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "train", *args], check=False, cwd=ROOT, env=command_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLFLOW_LOADED False PANDAS_LOADED False" in proc.stdout  # nor pandas (pyarrow's to_numpy imports it)
    assert f"marked 1 run(s) of dead processes FAILED: {stale.run_id}" in proc.stdout
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(stale.run_id).info.status == "FAILED"
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              filter_string="attributes.status = 'FINISHED'")
    assert len(runs) == 1 and "test_auc" in runs[0].data.metrics
    assert runs[0].data.tags["pid"] != str(os.getpid())


def test_ctrl_c_on_bars_train_ends_its_run_killed_and_leaves_no_helper(tmp_path):
    """SIGINT to the whole process group (a Ctrl-C) of a `bars train` writing through the helper: the run's process
    ends the run KILLED through the helper (which ignores SIGINT), exits 130, and nothing of the group is left."""
    import signal
    import time

    root = tmp_path / "proj"
    args = tiny_args(root, tiny_csv(tmp_path / "tiny.csv", n=4000), "train.max_epochs=500", "train.max_strikes=500")
    proc = subprocess.Popen([sys.executable, "-m", "bars.cli", "train", *args], cwd=ROOT, env=command_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch   2/"):
            break
    else:
        raise AssertionError("".join(lines)[-3000:])
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out[-3000:]
    assert "the MLflow run was ended KILLED" in out
    assert "itself from now on" not in out  # the helper took the Ctrl-C's end (it ignores SIGINT), no take-over
    deadline = time.time() + 30
    while True:  # the helper, in the same group, ends at the end of its input
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "a process of the group is still alive"
        time.sleep(0.2)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["error_type"] == "KeyboardInterrupt"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
