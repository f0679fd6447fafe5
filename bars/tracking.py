"""MLflow run tracking: the only module in bars that imports mlflow.

- :class:`Tracker` ``(uri, experiment)`` talks to one tracking store through an explicit ``MlflowClient`` (never
  MLflow's global "active run"), so several runs and threads in one process do not clash, and sweep trials can
  be child runs of a sweep run (tag ``mlflow.parentRunId``).
- ``with tracker.run(name, tags, params, parent_run_id=None) as run:`` yields a :class:`TrackedRun`. An
  exception inside ends the run ``FAILED`` (tags ``error`` and ``error_type``) and re-raises; a
  ``KeyboardInterrupt`` (or any other ``BaseException``) ends it ``KILLED``; otherwise ``FINISHED``.
- Every MLflow call made while a run is in progress goes through :meth:`Tracker._call`: retried with exponential
  backoff (default 5 tries over ~30 s), then a warning. A slow or unreachable store never raises into training.
  After a call has exhausted its retries the tracker is "degraded": later calls get one try each (so an
  unreachable store costs each epoch one failed call, not 30 s) until one succeeds again.
  Creating the experiment and the run at the start is the exception: it is retried, then raises, because a run
  that cannot be recorded at all should fail loudly before any training time is spent.
- Every run records ``hostname``, ``pid`` and ``pid_start`` (the process start time from /proc) tags;
  :func:`reconcile` ends runs left ``RUNNING`` by dead processes as ``FAILED``. :func:`end_run` ends one run
  (sweeps reconcile from Optuna's storage and call it).
- :func:`load_run_config` reads a run's ``config.yaml`` artifact back as a ``DictConfig`` (for ``reproduce``).
- :func:`main` is ``bars ui``: ``mlflow server`` on 127.0.0.1 over the store of the composed config.

A relative ``sqlite:///x.db`` URI is resolved against the project root (``bars.config.project_root()``), never the
working directory. For a SQLite store, experiments created here put their artifacts in ``mlartifacts/<experiment>``
next to the database file (MLflow's own default, ``./mlruns``, depends on the working directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Our retry loop governs; MLflow's own HTTP retries (7 tries, backoff 2 -> minutes) would multiply with it.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bars import __version__
from bars.config import flatten, project_root
from bars.process import process_alive, process_start

MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

# MLflow error codes that retrying cannot fix (bad input, not a flaky store).
_PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                     "BAD_REQUEST", "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED"}

STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")


class TrackingWarning(UserWarning):
    """A tracking call failed after its retries; the run goes on without that record."""


# ----------------------------------------------------------------------------------------------------- helpers


def resolve_uri(uri: str | None) -> str:
    """An absolute tracking URI. ``None``/empty -> ``sqlite:///<project root>/mlflow.db``; a relative sqlite path
    is resolved against the project root; anything else (http(s)://, postgresql://, absolute paths) is kept."""
    root = project_root()
    if not uri:
        return f"sqlite:///{root / 'mlflow.db'}"
    uri = str(uri)
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{(root / path).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:":
            return Path(path)
    return None


def _short(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(
        value, (list, dict, tuple)) else str(value)
    if len(s) > limit:
        s = s[: limit - 15] + "...[truncated]"
    return s


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def git_info(root: Path | None = None) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` ("true"/"false") of the project, or "unknown" outside a git checkout."""
    root = root or project_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        # results/ and sweeps/ are outputs the pipeline itself writes: they do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)sweeps"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"git_commit": commit, "git_dirty": "true" if dirty else "false"}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def environment_tags() -> dict[str, str]:
    """Tags that describe where a run ran: versions, host, process, git state, command line."""
    tags = {
        "bars_version": __version__,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "mlflow_version": mlflow.__version__,
    }
    start = process_start(os.getpid())
    if start is not None:
        tags["pid_start"] = start
    try:
        import torch

        tags["torch"] = torch.__version__
        tags["cuda"] = torch.version.cuda or "none"
    except ImportError:  # pragma: no cover - torch is a dependency
        tags["torch"] = tags["cuda"] = "none"
    tags["hardware"] = hardware_description()
    tags.update(git_info())
    return tags


def hardware_description() -> str:
    """CPU model and logical cores, plus the GPU name(s) when CUDA is available: the leaderboard's hardware."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical cores"
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        desc += f"; GPU {', '.join(names)} x{torch.cuda.device_count()}"
    return desc


def environment_report() -> str:
    """Platform line + every installed distribution as ``name==version`` (what ``pip freeze`` lists)."""
    from importlib import metadata

    lines = [
        f"# bars {__version__}",
        f"# python {sys.version.split()[0]} ({sys.executable})",
        f"# platform {platform.platform()} {platform.machine()}",
        f"# processor {platform.processor() or 'unknown'}; cpus {os.cpu_count()}",
    ]
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                    if d.metadata["Name"]}, key=str.lower)
    return "\n".join(lines + dists) + "\n"


# ----------------------------------------------------------------------------------------------------- tracker


class Tracker:
    """One tracking store + experiment. Thread-safe enough for several runs: nothing global is touched."""

    def __init__(self, uri: str | None, experiment: str, *, tries: int = 5, backoff: float = 2.0,
                 first_delay: float = 2.0, quiet: bool = False) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = str(experiment)
        self.tries = max(1, int(tries))
        self.backoff = backoff
        self.first_delay = first_delay  # 2 + 4 + 8 + 16 = 30 s of waiting over 5 tries
        self.quiet = quiet
        self._degraded = False
        self._lock = threading.Lock()
        self._experiment_id: str | None = None
        db = sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)

    # -- retry ------------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, raise_errors: bool = False,
              **kwargs: Any) -> Any:
        """Call ``fn`` with retries and exponential backoff; on final failure warn (or raise when asked)."""
        tries = 1 if (self._degraded and not raise_errors) else self.tries
        delay = self.first_delay
        for attempt in range(1, tries + 1):
            try:
                out = fn(*args, **kwargs)
                self._degraded = False
                return out
            except Exception as exc:
                permanent = _error_code(exc) in _PERMANENT_ERRORS
                if attempt == tries or permanent:
                    if raise_errors:
                        raise
                    if not permanent:
                        self._degraded = True
                    msg = (f"bars.tracking: {what} failed after {attempt} tr{'y' if attempt == 1 else 'ies'} "
                           f"against {self.uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    warnings.warn(msg, TrackingWarning, stacklevel=3)
                    return None
                time.sleep(delay)
                delay *= self.backoff
        return None

    # -- experiments ------------------------------------------------------------------------------------------
    def artifact_location(self) -> str | None:
        db = sqlite_path(self.uri)
        if db is None:
            return None  # a server or database decides
        return (db.resolve().parent / "mlartifacts" / self.experiment).as_uri()

    def experiment_id(self, create: bool = True) -> str | None:
        if self._experiment_id is not None:
            return self._experiment_id
        with self._lock:
            exp = self._call("get experiment", self.client.get_experiment_by_name, self.experiment,
                             raise_errors=True)
            if exp is None:
                if not create:
                    return None
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=self.artifact_location())
                except MlflowException:  # created concurrently by another process
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- runs ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
            params: Mapping[str, Any] | Any = None, parent_run_id: str | None = None,
            *, description: str | None = None) -> Iterator[TrackedRun]:
        """Start a run (raises if the store cannot create it), yield it, end it FINISHED / FAILED / KILLED.

        ``params`` may be a nested mapping or DictConfig (flattened with ``bars.config.flatten``).
        """
        run = self.start_run(name, tags, params, parent_run_id, description=description)
        try:
            yield run
        except Exception as exc:
            run.fail(exc)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit
            run.end("KILLED", {"error": f"{type(exc).__name__}: {exc}"[:MAX_TAG_VALUE],
                               "error_type": type(exc).__name__})
            raise
        else:
            if not run.ended:
                run.end("FINISHED")

    def start_run(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
                  params: Mapping[str, Any] | Any = None, parent_run_id: str | None = None,
                  *, description: str | None = None) -> TrackedRun:
        """Create a RUNNING run and return it; the caller must end it (``TrackedRun.end``). Prefer :meth:`run`."""
        exp_id = self.experiment_id(create=True)
        all_tags: dict[str, Any] = {"stage": "single", **environment_tags(), **dict(tags or {})}
        all_tags.setdefault("mlflow.source.name", all_tags.get("command", ""))
        all_tags.setdefault("mlflow.source.type", "LOCAL")
        if all_tags.get("git_commit") not in (None, "unknown"):
            all_tags.setdefault("mlflow.source.git.commit", all_tags["git_commit"])
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if description:
            all_tags["mlflow.note.content"] = description
        str_tags = {str(k): _short(v, MAX_TAG_VALUE) for k, v in all_tags.items() if v is not None}
        mlrun = self._call("create run", self.client.create_run, exp_id, tags=str_tags, run_name=name,
                           raise_errors=True)
        run = TrackedRun(self, mlrun.info.run_id, name=mlrun.info.run_name)
        if params is not None:
            run.log_params(params)
        return run

    def end_run(self, run_id: str, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        end_run(run_id, status, tags, tracker=self)

    # -- existing runs (what sweeps need; every call retried, then warned about) ------------------------------
    def attach(self, run_id: str) -> TrackedRun:
        """A handle on an existing run, to log to it or end it (e.g. a sweep's parent run on resume)."""
        return TrackedRun(self, run_id)

    def run_status(self, run_id: str) -> str | None:
        """The run's status (RUNNING, FINISHED, ...), or None when it does not exist or the store cannot say."""
        run = self._call("get run", self.client.get_run, run_id)
        return None if run is None else str(run.info.status)

    def find_runs(self, tags: Mapping[str, str]) -> list[RunSummary]:
        """Every run of this tracker's experiment whose tags equal ``tags`` (all of them), as summaries."""
        exp_id = self.experiment_id(create=False)
        if exp_id is None:
            return []
        flt = " and ".join(f"tags.`{k}` = {_quote(str(v))}" for k, v in tags.items())
        out: list[RunSummary] = []
        token = None
        while True:
            page = self._call("search runs", self.client.search_runs, [exp_id], filter_string=flt,
                              max_results=1000, page_token=token)
            if page is None:
                break
            out += [RunSummary(r.info.run_id, str(r.info.status), dict(r.data.tags)) for r in page]
            token = page.token
            if not token:
                break
        return out


@dataclass(frozen=True)
class RunSummary:
    """An existing run as :meth:`Tracker.find_runs` returns it."""

    run_id: str
    status: str
    tags: dict[str, str]


def _quote(value: str) -> str:
    """A string literal of an MLflow filter (which has no escapes: single quotes, else double quotes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"an MLflow filter cannot match a value holding both kinds of quotes: {value!r}")


class TrackedRun:
    """A handle on one MLflow run. Logging methods never raise (retry, then warn)."""

    def __init__(self, tracker: Tracker, run_id: str, name: str | None = None) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.name = name
        self.ended = False
        self.status: str = "RUNNING"

    @property
    def client(self) -> MlflowClient:
        return self.tracker.client

    @property
    def uri(self) -> str:
        """The tracking URI this run lives in."""
        return self.tracker.uri

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.tracker._call(what, fn, *args, **kwargs)

    # -- values -----------------------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                items.append(Metric(str(k), float(v), ts, int(step or 0)))
            except (TypeError, ValueError):
                warnings.warn(f"bars.tracking: metric {k}={v!r} is not a number; skipped", TrackingWarning,
                              stacklevel=2)
        for i in range(0, len(items), METRICS_PER_BATCH):
            self._call("log metrics", self.client.log_batch, self.run_id, metrics=items[i:i + METRICS_PER_BATCH])

    def log_params(self, params: Mapping[str, Any] | Any) -> None:
        """Log a (nested) mapping as params: flattened, values truncated to 6000 chars, 100 per call."""
        flat = flatten(params)
        items: list[Param] = []
        for k, v in flat.items():
            if len(k) > MAX_PARAM_KEY:
                warnings.warn(f"bars.tracking: param key longer than {MAX_PARAM_KEY} chars skipped: {k[:80]}...",
                              TrackingWarning, stacklevel=2)
                continue
            items.append(Param(k, _short(v, MAX_PARAM_VALUE)))
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self._call("log params", self.client.log_batch, self.run_id, params=items[i:i + PARAMS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(str(k), _short(v, MAX_TAG_VALUE)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self._call("set tags", self.client.log_batch, self.run_id, tags=items[i:i + PARAMS_PER_BATCH])

    # -- artifacts ----------------------------------------------------------------------------------------
    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._call(f"log artifact {Path(path).name}", self.client.log_artifact, self.run_id, str(path),
                   artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._call(f"log text {name}", self.client.log_text, self.run_id, text, name)

    def log_dict(self, d: Any, name: str) -> None:
        """``name`` ending .json -> JSON, .yaml/.yml -> YAML."""
        from bars.config import to_container

        self._call(f"log dict {name}", self.client.log_dict, self.run_id, to_container(d), name)

    def log_figure(self, fig: Any, name: str) -> None:
        """Save a matplotlib figure as a PNG artifact (and close it)."""
        try:
            self._call(f"log figure {name}", self.client.log_figure, self.run_id, fig, name)
        finally:
            with contextlib.suppress(Exception):
                import matplotlib.pyplot as plt

                plt.close(fig)

    # -- end ------------------------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.end("FAILED", {"error": f"{type(exc).__name__}: {exc}"[:MAX_TAG_VALUE],
                            "error_type": type(exc).__name__, "error_traceback": tb[-MAX_TAG_VALUE:]})

    def end(self, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        if self.ended:
            return
        if tags:
            self.set_tags(tags)
        self._call(f"end run {status}", self.client.set_terminated, self.run_id, status)
        self.ended = True
        self.status = status


# ------------------------------------------------------------------------------------------ ending and reconcile


def end_run(run_id: str, status: str = "FINISHED", tags: Mapping[str, Any] | None = None, *,
            uri: str | None = None, tracker: Tracker | None = None) -> None:
    """End any run (by id) with ``status`` (FINISHED/FAILED/KILLED) after setting ``tags``. Retries, then warns.

    For sweeps: a trial's child run whose worker died is ended from the Optuna storage's state.
    """
    status = status.upper()
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    tracker = tracker or Tracker(uri, experiment="Default")
    run = TrackedRun(tracker, run_id)
    if tags:
        run.set_tags(tags)
    tracker._call(f"end run {status}", tracker.client.set_terminated, run_id, status)


def _default_is_alive(tags: Mapping[str, str]) -> bool | None:
    """True/False for runs started on this host; None (unknown) for other hosts or runs without a pid tag."""
    if tags.get("hostname") != socket.gethostname():
        return None
    try:
        pid = int(tags["pid"])
    except (KeyError, ValueError):
        return None
    return process_alive(pid, tags.get("pid_start"))


def reconcile(uri: str | None, experiment: str | None = None, *,
              is_alive: Callable[[Mapping[str, str]], bool | None] | None = None,
              status: str = "FAILED") -> list[str]:
    """End every RUNNING run whose owning process is dead; returns their run ids.

    ``is_alive(tags) -> True | False | None`` decides (None = cannot tell, leave it). The default checks the
    ``hostname``/``pid``/``pid_start`` tags against this machine's processes, so only runs started on this host
    are judged. ``experiment=None`` scans every experiment.
    """
    tracker = Tracker(uri, experiment or "Default")
    client = tracker.client
    if experiment is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp = client.get_experiment_by_name(experiment)
        exp_ids = [exp.experiment_id] if exp is not None else []
    if not exp_ids:
        return []
    judge = is_alive or _default_is_alive
    ended: list[str] = []
    page_token = None
    while True:
        page = client.search_runs(exp_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=page_token)
        for r in page:
            alive = judge(dict(r.data.tags))
            if alive is False:
                end_run(r.info.run_id, status, {
                    "error": f"reconciled: owning process {r.data.tags.get('hostname')}:"
                             f"{r.data.tags.get('pid')} is gone",
                    "error_type": "ProcessDied",
                    "reconciled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }, tracker=tracker)
                ended.append(r.info.run_id)
        page_token = page.token
        if not page_token:
            break
    return ended




# ------------------------------------------------------------------------------------------------ read back


def load_run_config(run_id: str, uri: str | None = None, name: str = "config.yaml") -> Any:
    """The resolved config a run recorded (its ``config.yaml`` artifact) as a ``DictConfig``."""
    from omegaconf import OmegaConf

    client = MlflowClient(tracking_uri=resolve_uri(uri))
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, name, tmp)
        return OmegaConf.load(local)


def get_client(uri: str | None = None) -> MlflowClient:
    """A client on the resolved URI (for read-only tools like the leaderboard)."""
    return MlflowClient(tracking_uri=resolve_uri(uri))


# ------------------------------------------------------------------------------------------------- bars ui


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and working folder that serve the MLflow UI over ``uri``."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    db = sqlite_path(uri)
    cwd = db.resolve().parent if db is not None else project_root()
    return cmd, env, cwd


def main(argv: list[str] | None = None) -> int:
    """``bars ui [--port 5000] [--host 127.0.0.1] [hydra overrides...]``: the MLflow UI over the project's store."""
    parser = argparse.ArgumentParser(prog="bars ui", description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--print-only", action="store_true", help="print the server command and exit")
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. tracking.uri=sqlite:///x.db")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from bars.config import compose

    cfg = compose(args.overrides)
    uri = resolve_uri(cfg.tracking.uri)
    if uri.startswith(("http://", "https://")):
        print(f"bars ui: the tracking store is already a server: open {uri}")
        return 0
    cmd, env, cwd = ui_command(uri, args.host, args.port)
    print(f"bars ui: MLflow over {uri}\n         open http://{args.host}:{args.port}  (Ctrl-C stops it)",
          flush=True)
    if args.print_only:
        print(" ".join(cmd))
        return 0
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if db is None or db.exists():
        with contextlib.suppress(Exception):  # housekeeping: runs of killed processes on this host -> FAILED
            ended = reconcile(uri, None)
            if ended:
                print(f"bars ui: marked {len(ended)} run(s) of dead processes FAILED", flush=True)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0


__all__ = [
    "RunStatus", "RunSummary", "TrackedRun", "Tracker", "TrackingWarning", "end_run", "environment_report",
    "environment_tags", "get_client", "git_info", "load_run_config", "main", "reconcile",
    "resolve_uri", "sqlite_path",
]
