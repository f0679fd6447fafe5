"""A tracking store that disappears mid-run: the MLflow server is killed (SIGKILL) after the first epoch.
Training finishes; what could not be sent is kept in the run's spool (``bars.spool``) and reported; once the
server is back, ``bars sync`` sends it: the run ends FINISHED with every epoch's metrics, nothing lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
import warnings

import pytest
from _reliability import tiny_args, tiny_csv
from mlflow.tracking import MlflowClient

from bars import spool
from bars.config import compose
from bars.run import train_one
from bars.ui import ui_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db_uri: str, port: int, log) -> subprocess.Popen:
    cmd, env, cwd = ui_command(db_uri, port=port)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            assert time.time() < deadline, "mlflow server did not come up in 120 s"
            time.sleep(0.5)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_server_killed_mid_run_nothing_lost(tmp_path):
    db = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    root = tmp_path / "project"
    cfg = compose(tiny_args(root, tiny_csv(tmp_path / "tiny.csv"), "train.max_epochs=3", "train.max_strikes=5",
                            f"tracking.uri={uri}", "tracking.tries=2", "tracking.retry_wait=0.05"))
    server = _serve(db, port, log)
    try:
        def on_epoch(ep):
            if ep.epoch == 1:
                _kill(server)  # the store goes away; training must not notice

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = train_one(cfg, on_epoch=on_epoch, quiet=True)
        assert result.epochs == 3 and result.run_id
        kept = spool.pending(root / "tracking_spool")
        assert [k.run_id for k in kept] == [result.run_id]
        server = _serve(db, port, log)
        client = MlflowClient(tracking_uri=uri)
        assert client.get_run(result.run_id).info.status == "RUNNING"  # until its records are sent
        # bars sync, in this process: a spool is sent by its owner or once its owner is gone (here: its owner)
        assert spool.main([f"tracking.uri={uri}", f"paths.root={root}"]) == 0
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(result.run_id, "val_auc"))
        assert steps == [1, 2, 3, 3]  # one per epoch, and the run's summary (best epoch's value) at the last step
        assert run.data.metrics["test_auc"] == pytest.approx(result.metrics["test_auc"])
        assert spool.pending(root / "tracking_spool") == []
    finally:
        if server.poll() is None:
            _kill(server)
        log.close()
