"""First use is safe: eight real ``bars`` commands started at once on a fresh project all succeed.

MLflow creates and migrates a SQLite store in every process that opens it first; several at once used to leave
``mlflow.db`` corrupted for good. ``bars.tracking.ensure_store`` does it once under ``mlflow.db-init.lock``; the
dataset is built once under its lock; the sweep's journal and study are created once under
``study.journal.init.lock``. The commands are forked from one command server (real processes, see
``bars.benchmarks.procs``) so that eight start within milliseconds of each other.
"""

from __future__ import annotations

import pytest
from _reliability import command_env, tiny_args, tiny_csv
from mlflow.tracking import MlflowClient
from pg import postgres_url  # noqa: F401  (fixture)

from bars.benchmarks.procs import CommandServer

N = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CommandServer(stderr=tmp_path_factory.mktemp("srv") / "server.err") as srv:
        yield srv


def _start_all(server, root, argv):
    env = command_env()
    pids = [server.start(argv, env=env, cwd=root, log=root / f"cmd{i}.log") for i in range(N)]
    rcs = [server.wait(p, timeout=600) for p in pids]
    logs = {i: (root / f"cmd{i}.log").read_text()[-2000:] for i, rc in enumerate(rcs) if rc != 0}
    assert rcs == [0] * N, logs


def test_eight_trains_at_once_on_a_fresh_project(server, tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    csv = tiny_csv(tmp_path / "tiny.csv")
    _start_all(server, root, ["train", *tiny_args(root, csv)])
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    bad = [r.info.run_id for r in runs if r.info.status != "FINISHED"]  # every command exited 0: show its log
    why = {i: log[-2000:] for i in range(N) if any(b in (log := (root / f"cmd{i}.log").read_text()) for b in bad)}
    assert len(runs) == N and not bad, (len(runs), bad, why)
    assert len({r.info.run_id for r in runs}) == N
    # one prepared dataset, no temporary folder left next to it
    built = [p for p in (root / "data").iterdir() if p.name != ".locks"]
    assert len(built) == 1, built
    assert not [p for p in (root / "data").rglob("*") if p.name.startswith(".tmp")]
    # all eight trained on the same bytes
    assert len({r.data.tags.get("data_fingerprint") for r in runs}) == 1


@pytest.mark.slow
def test_eight_sweep_launchers_at_once_share_one_journal_study(server, tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    csv = tiny_csv(tmp_path / "tiny.csv")
    _start_all(server, root, ["sweep", *tiny_args(root, csv, "sweep.trials=8", "sweep.workers=1",
                                                   "sweep.progress=off")])
    import optuna

    (study_dir,) = (root / "sweeps").iterdir()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(study_dir / "study.journal")))
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 1
    trials = optuna.load_study(study_name=summaries[0].study_name, storage=storage).trials
    done = [t for t in trials if t.state.is_finished() and t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) >= 8 and not [t for t in trials if t.state.name == "RUNNING"]
    assert len({t.number for t in trials}) == len(trials)
    assert (study_dir / "trials.csv").is_file() and (study_dir / "best.overrides").is_file()


def _open_after(barrier, url, out, i):  # a forked child: every child opens the fresh database at the same moment
    from bars.study import open_storage

    try:
        barrier.wait(timeout=60)
        open_storage(url)
        out.put((i, "ok"))
    except Exception as e:  # noqa: BLE001  (reported to the parent, which asserts on it)
        out.put((i, f"{type(e).__name__}: {str(e)[:300]}"))


def test_eight_processes_open_a_fresh_postgres_optuna_storage_at_once(postgres_url):  # noqa: F811
    """Optuna creates its tables (and alembic's version table) in whichever process opens a new database first;
    several at once raced ("duplicate key value violates unique constraint pg_type_typname_nsp_index": a sweep
    launcher died while another process opened the same database). ``open_storage`` now takes the first-use
    lock itself, so every opener (sweep, dashboard, status, a test poller) is safe."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(N), ctx.Queue()
    procs = [ctx.Process(target=_open_after, args=(barrier, postgres_url, out, i)) for i in range(N)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == {i: "ok" for i in range(N)}


def test_store_creation_killed_mid_migration_leaves_no_broken_store(tmp_path):
    """kill -9 while MLflow creates a new SQLite store (its schema migration takes seconds), then the next command
    (a new process) opens the store normally. Found by the 100-point chaos run of ``bars final``: a killed first
    use left ``table _alembic_tmp_experiments already exists`` for good. The store is now built under a temporary
    name and renamed into place."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}

    def start(folder):
        db = folder / "mlflow.db"
        code = f"from bars.tracking import ensure_store; ensure_store({f'sqlite:///{db}'!r})"
        return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=folder), code

    def building(folder) -> int:
        """Bytes of the store being built (its temporary file, or the store itself): -1 while there is none."""
        for f in [*folder.glob("mlflow.db.tmp-*"), folder / "mlflow.db"]:
            with contextlib.suppress(OSError):
                return f.stat().st_size
        return -1

    # The size of a whole new store. A creation grows its file through ~130 sizes in ~1-15 s (by machine and
    # load); the kills below land when the file has reached a fraction of that size, inside the migration
    # whatever its pace. (Timed kills missed on a fast host and on a loaded one.)
    (tmp_path / "whole").mkdir()
    proc, _ = start(tmp_path / "whole")
    assert proc.wait(timeout=300) == 0
    whole = (tmp_path / "whole" / "mlflow.db").stat().st_size
    killed = 0
    for fraction in (0.1, 0.35, 0.6, 0.85):
        folder = tmp_path / f"after{fraction}"
        folder.mkdir()
        db = folder / "mlflow.db"
        proc, code = start(folder)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and building(folder) < fraction * whole:
            time.sleep(0.0005)
        if proc.poll() is None:  # still creating the store
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        rerun = subprocess.run([sys.executable, "-c", code], check=False, env=env, cwd=folder,
                               capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        run = client.create_run(client.create_experiment("after-kill"))
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
        assert not list(folder.glob("mlflow.db.tmp-*"))
    assert killed >= 3, f"the kills did not land while the store was being created ({killed} of 4)"
