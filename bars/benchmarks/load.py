"""`bars bench load` (`make bench-load`): many sweep workers on one study for minutes; is anything lost?

``WORKERS`` (8) concurrent ``bars sweep`` workers run one study for ``MINUTES`` (10) with a tiny fast model (LR on
the first ``--rows`` rows of the shipped movielens_small data, 2 epochs, trials of a few seconds), through the
real command: ``bars sweep sweep.workers=N sweep.timeout=<minutes>`` (the launcher creates the study and the
MLflow parent run, starts N worker processes, and closes everything when their time is up). Two storage setups:

- ``sqlite``: the default setup, the embedded SQLite MLflow store (``mlflow.db``) and the Optuna journal file;
- ``postgres``: a PostgreSQL server on 127.0.0.1 (``initdb`` into a temp folder, started and removed by the
  benchmark), an ``mlflow server`` on 127.0.0.1 over one database of it, and the Optuna RDB storage in another.

Afterwards it counts from the stores themselves (never from the workers' own reports):

- Optuna trials by state (trials that lost the budget race, ``bars_skipped``, apart);
- MLflow trial runs by status (and the parent run);
- **lost**: a finished (complete/pruned) trial without its MLflow run, a trial whose recorded ``mlflow_run_id``
  is not in the store, or a trial run whose trial is not in the study;
- **duplicated**: two or more MLflow runs for one trial number;
- **left RUNNING**: MLflow runs (trial or parent) or Optuna trials still RUNNING once every process has exited;
- from the launcher's log (every worker's output is relayed into it): tracking calls retried
  (``bars.tracking: retry``, printed when ``BARS_TRACKING_LOG_RETRIES`` is set, as here), tracking calls that
  failed after their retries, storage errors (SQLAlchemy/SQLite/PostgreSQL/Optuna storage exceptions),
  tracebacks, failed trials and workers that exited non-zero.

Prints a table per setup and exits 1 if any setup has a lost, duplicated or left-RUNNING count above 0.

    bars bench load [--workers 8] [--minutes 10] [--setups sqlite,postgres] [--rows 20000] [--out .bench/load]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bars.config import PROJECT_ROOT

SETUPS = ("sqlite", "postgres")
BAD = ("lost", "duplicated", "left_running")  # any of these above 0 fails the benchmark

# What the launcher log shows (workers' lines are relayed into it as "[w<i>] ...").
RETRY_RE = re.compile(r"bars\.tracking: retry \d+/\d+")
GAVE_UP_RE = re.compile(r"bars\.tracking: .* failed after \d+ tr(?:y|ies)")
STORAGE_ERR_RE = re.compile(r"OperationalError|DatabaseError|IntegrityError|InterfaceError|database is locked|"
                            r"StorageInternalError|psycopg\.\w*Error|sqlite3\.\w*Error|too many clients|"
                            r"server closed the connection|could not connect")
TRACEBACK_RE = re.compile(r"Traceback \(most recent call last\)")
TRIAL_FAILED_RE = re.compile(r"trial #\d+ failed")
WORKER_EXIT_RE = re.compile(r"worker \d+ \(pid \d+\) exited with status")


@dataclass
class Counts:
    """What the stores (and the log) hold after a load run."""

    setup: str
    workers: int = 0
    seconds: float = 0.0
    launcher_rc: int | None = None
    trials: dict[str, int] = field(default_factory=dict)  # Optuna state -> count (skipped apart)
    skipped: int = 0  # trials that lost the budget race to another worker (never trained)
    runs: dict[str, int] = field(default_factory=dict)  # MLflow trial runs: status -> count
    parent: str = ""  # the parent run's status
    lost: int = 0
    duplicated: int = 0
    left_running: int = 0
    retries: int = 0
    gave_up: int = 0
    storage_errors: int = 0
    tracebacks: int = 0
    trials_failed_logged: int = 0
    workers_failed: int = 0
    problems: list[str] = field(default_factory=list)  # one line per lost / duplicated / RUNNING item

    @property
    def ok(self) -> bool:
        return all(getattr(self, k) == 0 for k in BAD)


# --------------------------------------------------------------------------------------------------------------
# Counting (from the stores)
# --------------------------------------------------------------------------------------------------------------
def count_stores(setup: str, study_name: str, storage: str, tracking_uri: str, experiment: str,
                 log: Path | None = None) -> Counts:
    """Count trials, runs, lost, duplicated and RUNNING items of one sweep study from its Optuna storage and
    its MLflow store, and the retries and errors in ``log``."""
    import optuna
    from mlflow.entities import ViewType

    from bars.records import get_client
    from bars.study import FINISHED, SKIPPED_ATTR, open_storage

    c = Counts(setup)
    st = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=st)
        trials = study.get_trials(deepcopy=False)
    finally:
        with contextlib.suppress(Exception):
            st.remove_session()  # type: ignore[attr-defined]
            st.engine.dispose()  # type: ignore[attr-defined]
    real = {t.number: t for t in trials if SKIPPED_ATTR not in t.user_attrs}
    c.skipped = len(trials) - len(real)
    c.trials = dict(sorted(Counter(t.state.name for t in real.values()).items()))

    client = get_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = []
    if exp is not None:
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], f"tags.sweep_study = '{study_name}'",
                                      run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    trial_runs = [r for r in runs if r.data.tags.get("stage") == "trial"]
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    c.runs = dict(sorted(Counter(r.info.status for r in trial_runs).items()))
    c.parent = ",".join(r.info.status for r in parents) or "none"

    by_number: dict[int, list[str]] = {}
    run_ids = set()
    for r in trial_runs:
        run_ids.add(r.info.run_id)
        n = r.data.tags.get("trial_number", "")
        if not n.isdigit() or int(n) not in real:
            c.lost += 1
            c.problems.append(f"run {r.info.run_id} ({r.info.status}): no trial #{n or '?'} in the study")
            continue
        by_number.setdefault(int(n), []).append(r.info.run_id)
    for n, t in sorted(real.items()):
        mine = by_number.get(n, [])
        rid = t.user_attrs.get("mlflow_run_id")
        if t.state in FINISHED and not mine:
            c.lost += 1
            c.problems.append(f"trial #{n} ({t.state.name}) has no MLflow run")
        elif rid and rid not in run_ids:
            c.lost += 1
            c.problems.append(f"trial #{n} ({t.state.name}) names run {rid}, which is not in the store")
        if len(mine) > 1:
            c.duplicated += len(mine) - 1
            c.problems.append(f"trial #{n}: {len(mine)} runs ({', '.join(mine)})")
        if t.state.name == "RUNNING":
            c.left_running += 1
            c.problems.append(f"trial #{n} is RUNNING in the Optuna storage")
    for r in runs:
        if r.info.status == "RUNNING":
            c.left_running += 1
            c.problems.append(f"run {r.info.run_id} ({r.data.tags.get('stage')}) is RUNNING in MLflow")
    if log is not None and log.exists():
        scan_log(c, log.read_text(errors="replace"))
    return c


def scan_log(c: Counts, text: str) -> None:
    for line in text.splitlines():
        c.retries += bool(RETRY_RE.search(line))
        c.gave_up += bool(GAVE_UP_RE.search(line))
        c.storage_errors += bool(STORAGE_ERR_RE.search(line))
        c.tracebacks += bool(TRACEBACK_RE.search(line))
        c.trials_failed_logged += bool(TRIAL_FAILED_RE.search(line))
        c.workers_failed += bool(WORKER_EXIT_RE.search(line))


# --------------------------------------------------------------------------------------------------------------
# Servers (PostgreSQL, mlflow server), both on 127.0.0.1, both removed afterwards
# --------------------------------------------------------------------------------------------------------------
def find_pg_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: $PG_BIN, then PATH, then the newest /usr/lib/postgresql/<v>/bin."""
    import glob

    cands = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []
    if shutil.which("initdb"):
        cands.append(Path(shutil.which("initdb") or "").parent)

    def version(p: str) -> float:
        with contextlib.suppress(ValueError):
            return float(Path(p).parent.name)
        return 0.0

    cands += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    return next((c for c in cands if (c / "initdb").exists() and (c / "pg_ctl").exists()), None)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres(databases: Sequence[str]) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster (trust auth, 127.0.0.1 only, fsync off) with ``databases`` created;
    yields ``{name: postgresql+psycopg://...}``. As root the server runs as the ``postgres`` user."""
    import pwd

    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found: install the `postgresql` "
                                "package or set PG_BIN")
    tmp = Path(tempfile.mkdtemp(prefix="bars-load-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.chmod(tmp, 0o700)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = tmp / "data"
    try:
        subprocess.run([*prefix, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], cwd=tmp, check=True, capture_output=True, text=True)
        port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -k {tmp} -c fsync=off -c max_connections=200"
        subprocess.run([*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "server.log"),
                        "-w", "-t", "60", "start"], cwd=tmp, check=True, capture_output=True, text=True)
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            for db in databases:
                conn.execute(f'CREATE DATABASE "{db}"')
        yield {db: f"postgresql+psycopg://postgres@127.0.0.1:{port}/{db}" for db in databases}
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           cwd=tmp, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, folder: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over ``backend_uri`` (what ``bars ui`` starts), artifacts under
    ``folder``; yields its http:// URI and kills it (SIGKILL to its process group) at the end."""
    from bars.ui import ui_command

    port = free_port()
    cmd, env, _ = ui_command(backend_uri, port=port)
    folder.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not come up ({e}); see {log}") from e
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------------------------------------------
# One setup
# --------------------------------------------------------------------------------------------------------------
def sweep_overrides(folder: Path, data_dir: Path, workers: int, seconds: float, rows: int, tracking_uri: str,
                    storage: str | None) -> list[str]:
    return ["model=lr", "data=movielens_small", f"data.rows={rows}", f"paths.data={data_dir}",
            f"tracking.uri={tracking_uri}", f"tracking.spool_dir={folder / 'tracking_spool'}",
            f"paths.checkpoints={folder / 'checkpoints'}", f"sweep.dir={folder / 'sweep'}",
            *( [f"sweep.storage={storage}"] if storage else []),
            "sweep.trials=1000000", f"sweep.workers={workers}", "sweep.devices=cpu", "sweep.threads=1",
            f"sweep.timeout={seconds:g}", "sweep.max_epochs=2", "sweep.progress=plain", "sweep.poll=1",
            "train.device=cpu", "train.batch_size=1024", "train.eval_batch_size=8192", "train.max_epochs=2"]


def run_sweep(overrides: list[str], log: Path, limit: float) -> int:
    """The real launcher as a child process (its workers are its children); killed past ``limit`` s."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", BARS_TRACKING_LOG_RETRIES="1",
               MLFLOW_DISABLE_TELEMETRY="true", BARS_SWEEP_PROGRESS="plain")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BARS_SWEEP_STORAGE", None)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bars.cli", "sweep", *overrides], cwd=PROJECT_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: workers stop, the launcher closes the runs
        try:
            return proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()


def run_setup(setup: str, out: Path, data_dir: Path, workers: int, seconds: float, rows: int) -> Counts:
    from bars.config import compose

    folder = out / setup
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "sweep.log"
    limit = seconds + 600  # the last trials finish after the timeout; beyond this the launcher is interrupted
    with contextlib.ExitStack() as stack:
        if setup == "sqlite":
            tracking, storage = f"sqlite:///{folder / 'mlflow.db'}", None
        elif setup == "postgres":
            dbs = stack.enter_context(postgres(["mlflow", "optuna"]))
            tracking = stack.enter_context(mlflow_server(dbs["mlflow"], folder / "server", folder / "server.log"))
            storage = dbs["optuna"]
        else:
            raise ValueError(f"unknown setup {setup!r}; setups are {', '.join(SETUPS)}")
        ov = sweep_overrides(folder, data_dir, workers, seconds, rows, tracking, storage)
        cfg = compose(ov)
        t0 = time.monotonic()
        rc = run_sweep(ov, log, limit)
        secs = time.monotonic() - t0
        from bars.study import storage_url

        c = count_stores(setup, str(cfg.sweep.study), storage_url(cfg), tracking, str(cfg.tracking.experiment), log)
    c.workers, c.seconds, c.launcher_rc = workers, round(secs, 1), rc
    (folder / "counts.json").write_text(json.dumps(asdict(c), indent=2) + "\n")
    return c


def prepare_data(data_dir: Path, rows: int) -> None:
    """Prepared once, before any worker starts (the launcher would do it too, but once per setup)."""
    import io

    from bars.config import compose
    from bars.data.prepare import prepare

    with contextlib.redirect_stdout(io.StringIO()):
        prepare(compose(["data=movielens_small", f"data.rows={rows}", f"paths.data={data_dir}"]))


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------
def _fmt(d: dict[str, int]) -> str:
    return " ".join(f"{k.lower()} {v}" for k, v in d.items()) or "none"


def table(counts: Sequence[Counts]) -> str:
    rows = [
        ("workers / wall s", lambda c: f"{c.workers} / {c.seconds:g}"),
        ("launcher exit status", lambda c: str(c.launcher_rc)),
        ("Optuna trials", lambda c: _fmt(c.trials)),
        ("  skipped (budget race)", lambda c: str(c.skipped)),
        ("MLflow trial runs", lambda c: _fmt(c.runs)),
        ("MLflow parent run", lambda c: c.parent),
        ("tracking retries", lambda c: str(c.retries)),
        ("tracking calls given up", lambda c: str(c.gave_up)),
        ("storage errors (log lines)", lambda c: str(c.storage_errors)),
        ("tracebacks", lambda c: str(c.tracebacks)),
        ("trials failed (log)", lambda c: str(c.trials_failed_logged)),
        ("workers exited non-zero", lambda c: str(c.workers_failed)),
        ("LOST trials/runs", lambda c: str(c.lost)),
        ("DUPLICATED runs", lambda c: str(c.duplicated)),
        ("left RUNNING", lambda c: str(c.left_running)),
        ("verdict", lambda c: "ok" if c.ok else "FAIL"),
    ]
    heads = ["", *[c.setup for c in counts]]
    body = [[name, *[f(c) for c in counts]] for name, f in rows]
    widths = [max(len(str(r[i])) for r in [heads, *body]) for i in range(len(heads))]
    lines = [" | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in [heads, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bars bench load", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 8))
    p.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES") or 10))
    p.add_argument("--setups", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument("--rows", type=int, default=20000, help="movielens_small rows (trials of a few seconds)")
    p.add_argument("--out", type=Path, default=Path(".bench/load"))
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    setups = [s.strip() for s in a.setups.split(",") if s.strip()]
    bad = [s for s in setups if s not in SETUPS]
    if bad or a.workers < 1 or a.minutes <= 0:
        print(f"bars bench load: --setups must be among {', '.join(SETUPS)} (got {bad}), --workers >= 1, "
              f"--minutes > 0", file=sys.stderr)
        return 2
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    prepare_data(data_dir, a.rows)
    print(f"bars bench load: {a.workers} workers x {a.minutes:g} min per setup ({', '.join(setups)}), LR on "
          f"movielens_small[:{a.rows}], 2 epochs per trial; {os.cpu_count()} CPU cores; logs in {out}",
          flush=True)
    counts = []
    for s in setups:
        c = run_setup(s, out, data_dir, a.workers, a.minutes * 60, a.rows)
        counts.append(c)
        print(f"bars bench load: {s}: done in {c.seconds:g} s; {out / s / 'counts.json'}", flush=True)
    print(table(counts))
    for c in counts:
        for line in c.problems[:20]:
            print(f"  {c.setup}: {line}")
    failed = [c.setup for c in counts if not c.ok]
    if failed:
        print(f"bars bench load: FAIL: lost, duplicated or RUNNING items in {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
