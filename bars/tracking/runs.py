"""Runs: :class:`Tracker` (one store + experiment, retried calls) and :class:`TrackedRun` (one run's params,
metrics, tags and artifacts), and :func:`end_run`. Part of :mod:`bars.tracking`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bars.config import flatten, redact, safe_url
from bars.environment import environment_tags
from bars.tracking.store import (
    _PERMANENT_ERRORS,
    MAX_PARAM_KEY,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    STATUSES,
    _error_code,
    _short,
    ensure_store,
    replay_spool,
    resolve_uri,
    sqlite_path,
)
from bars.tracking_helper import TrackingWarning, ended_on_exit, failure_tags
from bars.tracking_helper import redacted as _redacted

# ----------------------------------------------------------------------------------------------------- tracker


class Tracker:
    """One tracking store + experiment. Thread-safe enough for several runs: nothing global is touched."""

    def __init__(self, uri: str | None, experiment: str, *, tries: int = 5, backoff: float = 2.0,
                 first_delay: float = 2.0, quiet: bool = False,
                 spool_dir: str | os.PathLike[str] | None = None) -> None:
        from bars.spool import Spool

        self.uri = resolve_uri(uri)
        self.experiment = str(experiment)
        self.tries = max(1, int(tries))
        self.backoff = backoff
        self.first_delay = first_delay  # 2 + 4 + 8 + 16 = 30 s of waiting over 5 tries
        self.quiet = quiet
        self._degraded = False
        self._lock = threading.Lock()
        self._experiment_id: str | None = None
        self.spool = Spool(spool_dir, self.uri) if spool_dir else None
        self.retries = 0  # calls retried (a count for benchmarks and reports)
        self.failures = 0  # calls that failed after their retries
        ensure_store(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)

    # -- retry ------------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, raise_errors: bool = False,
              keep: Callable[[], Path | None] | None = None, **kwargs: Any) -> Any:
        """Call ``fn`` with retries and exponential backoff; on final failure warn (or raise when asked).
        ``keep()``, when given, puts the failed write into the run's spool (its path goes into the warning)."""
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
                    self.failures += 1
                    if not permanent:
                        self._degraded = True
                    kept = keep() if (keep is not None and not permanent) else None
                    first = redact(str(exc).splitlines()[0][:300]) if str(exc) else ""
                    msg = (f"bars.tracking: {what} failed after {attempt} tr{'y' if attempt == 1 else 'ies'} "
                           f"against {safe_url(self.uri)}: {type(exc).__name__}: {first}"
                           + (f"; kept in {kept} (sent when the store is back: bars sync)" if kept else ""))
                    warnings.warn(msg, TrackingWarning, stacklevel=3)
                    return None
                self.retries += 1
                if os.environ.get("BARS_TRACKING_LOG_RETRIES"):  # bars bench load counts these lines
                    print(f"bars.tracking: retry {attempt}/{tries - 1}: {what} against {safe_url(self.uri)}: "
                          f"{type(exc).__name__}: {redact(str(exc).splitlines()[0][:200]) if str(exc) else ''}",
                          file=sys.stderr, flush=True)
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
        with ended_on_exit(self.start_run(name, tags, params, parent_run_id, description=description)) as run:
            yield run

    def start_run(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
                  params: Mapping[str, Any] | Any = None, parent_run_id: str | None = None,
                  *, description: str | None = None, environment: Mapping[str, Any] | None = None) -> TrackedRun:
        """Create a RUNNING run and return it; the caller must end it (``TrackedRun.end``). Prefer :meth:`run`.
        ``environment``: the environment tags (``bars.environment.environment_tags``) of the process the run is
        for, when that is not this one (the tracking helper's runs)."""
        exp_id = self.experiment_id(create=True)
        env = environment_tags() if environment is None else dict(environment)
        all_tags: dict[str, Any] = {"stage": "single", **env, **dict(tags or {})}
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
        run = TrackedRun(self, mlrun.info.run_id, name=mlrun.info.run_name, artifact_uri=mlrun.info.artifact_uri)
        if params is not None:  # sent by the run's writer thread while the caller goes on (in the store before
            run.log_params(params, wait=False)  # any later waited write, and before the run ends)
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


    # -- the spool ------------------------------------------------------------------------------------------
    def send_spool(self, run_id: str) -> bool:
        """Send what this run's spool kept (one try per record); True when all was sent (the spool is removed),
        else say on stderr where the records are kept and how they get sent."""
        from bars import spool as sp

        if self.spool is None:
            return True
        kept = sp.read(self.spool.path(run_id))
        if kept is None:
            return True
        with sp.claimed(kept) as mine:
            if mine and replay_spool(self.client, kept):
                sp.remove(kept)
                print(f"bars.tracking: the store at {safe_url(self.uri)} is back: sent the {len(kept.records)} "
                      f"record(s) of run {run_id} kept while it was away", file=sys.stderr, flush=True)
                return True
        print(f"bars.tracking: {len(kept.records)} record(s) of run {run_id} that the store at "
              f"{safe_url(self.uri)} could not take are kept in {kept.path}; they are sent by `bars sync` (and by "
              f"any bars command that opens this store)", file=sys.stderr, flush=True)
        return False


def tracker_of(cfg: Any, **kwargs: Any) -> Tracker:
    """The :class:`Tracker` of a composed config: ``tracking.uri``, ``.experiment``, ``.tries``, ``.retry_wait``
    and ``.spool_dir`` (keyword arguments win)."""
    t = cfg.tracking
    opts = {"tries": int(t.get("tries") or 5), "first_delay": float(t.get("retry_wait", 2.0)),
            "spool_dir": t.get("spool_dir"), **kwargs}
    return Tracker(str(t.uri), str(t.experiment), **opts)


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
    """A handle on one MLflow run. Logging methods never raise (retry, then keep in the spool or warn)."""

    def __init__(self, tracker: Tracker, run_id: str, name: str | None = None,
                 artifact_uri: str | None = None) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.name = name
        self.artifact_uri = artifact_uri  # known when this process created the run (Tracker.start_run)
        self._writer: Any = None  # one background thread for writes made with wait=False, in order
        self._pending: list[Any] = []
        self._pending_lock = threading.Lock()
        self.ended = False
        self.status: str = "RUNNING"

    @property
    def client(self) -> MlflowClient:
        return self.tracker.client

    @property
    def uri(self) -> str:
        """The tracking URI this run lives in."""
        return self.tracker.uri

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, keep: Callable[..., Path] | None = None,
              keep_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        spool = self.tracker.spool
        kept = None
        if spool is not None and keep is not None:
            def kept() -> Path:
                return keep(self.run_id, experiment=self.tracker.experiment, **dict(keep_kwargs or {}))
        return self.tracker._call(what, fn, *args, keep=kept, **kwargs)

    def _batch(self, what: str, metrics: list[Metric] = (), params: list[Param] = (), tags: list[RunTag] = ()
               ) -> None:
        spool = self.tracker.spool
        self._call(what, self.client.log_batch, self.run_id, metrics=list(metrics), params=list(params),
                   tags=list(tags), keep=spool.batch if spool else None, keep_kwargs={
                       "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                       "params": [[x.key, x.value] for x in params], "tags": [[t.key, t.value] for t in tags]})

    # -- values -----------------------------------------------------------------------------------------------
    @staticmethod
    def _metric_items(metrics: Mapping[str, Any], step: int | None) -> list[Metric]:
        ts = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                items.append(Metric(str(k), float(v), ts, int(step or 0)))
            except (TypeError, ValueError):
                warnings.warn(f"bars.tracking: metric {k}={v!r} is not a number; skipped", TrackingWarning,
                              stacklevel=3)
        return items

    @staticmethod
    def _param_items(params: Mapping[str, Any] | Any) -> list[Param]:
        items: list[Param] = []
        for k, v in flatten(params).items():
            if len(k) > MAX_PARAM_KEY:
                warnings.warn(f"bars.tracking: param key longer than {MAX_PARAM_KEY} chars skipped: {k[:80]}...",
                              TrackingWarning, stacklevel=3)
                continue
            items.append(Param(k, redact(_short(v, MAX_PARAM_VALUE))))
        return items

    @staticmethod
    def _tag_items(tags: Mapping[str, Any]) -> list[RunTag]:
        return [RunTag(str(k), redact(_short(v, MAX_TAG_VALUE))) for k, v in tags.items() if v is not None]

    def log(self, metrics: Mapping[str, Any] | None = None, step: int | None = None, *,
            params: Mapping[str, Any] | Any = None, tags: Mapping[str, Any] | None = None,
            wait: bool = True) -> None:
        """Metrics (at ``step``), params and tags together in as few ``log_batch`` calls as MLflow's limits allow
        (100 params, 100 tags, 1000 entries per call): one call for a run's summary instead of one per kind.
        Each call is retried and, failing that, kept in the spool, like every other write.

        ``wait=False`` hands the calls to this run's writer thread and returns at once (the values are taken
        now): the store's round trips then overlap the caller's work. Writes keep their order: every call made
        with ``wait=True`` (and :meth:`end`, :meth:`flush`) first waits for those still in flight, so what a
        waited call recorded is in the store, with everything logged before it, when it returns."""
        ms = self._metric_items(metrics or {}, step)
        ps = self._param_items(params) if params is not None else []
        ts = self._tag_items(tags or {})
        kinds = [w for w, x in (("log metrics", ms), ("log params", ps), ("set tags", ts)) if x]
        what = kinds[0] if len(kinds) == 1 else "log batch"
        batches = []
        while ms or ps or ts:
            p, ps = ps[:PARAMS_PER_BATCH], ps[PARAMS_PER_BATCH:]
            t, ts = ts[:PARAMS_PER_BATCH], ts[PARAMS_PER_BATCH:]
            room = METRICS_PER_BATCH - len(p) - len(t)
            m, ms = ms[:room], ms[room:]
            batches.append((m, p, t))

        def send() -> None:
            for m, p, t in batches:
                self._batch(what, metrics=m, params=p, tags=t)

        if wait:
            self.flush()
            send()
            return
        with self._pending_lock:
            if self._writer is None:
                from concurrent.futures import ThreadPoolExecutor

                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bars-tracking")
            self._pending.append(self._writer.submit(send))

    def flush(self) -> None:
        """Wait until the writes made with ``wait=False`` are done (sent, or kept in the spool and warned about)."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, wait: bool = True) -> None:
        self.log(metrics, step, wait=wait)

    def log_params(self, params: Mapping[str, Any] | Any, *, wait: bool = True) -> None:
        """Log a (nested) mapping as params: flattened, values truncated to 6000 chars, 100 per call; passwords
        of URLs in values removed."""
        self.log(params=params, wait=wait)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log(tags=tags)

    # -- artifacts ----------------------------------------------------------------------------------------
    def _keep_artifact(self) -> Callable[..., Path] | None:
        return self.tracker.spool.artifact if self.tracker.spool is not None else None

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._call(f"log artifact {Path(path).name}", self.client.log_artifact, self.run_id, str(path),
                   artifact_path, keep=self._keep_artifact(), keep_kwargs={"local": path,
                                                                            "artifact_path": artifact_path})

    def _named(self, name: str) -> dict[str, Any]:
        folder, _, base = name.rpartition("/")
        return {"name": base, "artifact_path": folder or None}

    def log_text(self, text: str, name: str) -> None:
        text = redact(text)  # a storage URL's password never reaches an artifact either
        self._call(f"log text {name}", self.client.log_text, self.run_id, text, name,
                   keep=self._keep_artifact(), keep_kwargs={"text": text, **self._named(name)})

    def log_dict(self, d: Any, name: str) -> None:
        """``name`` ending .json -> JSON, .yaml/.yml -> YAML."""
        from bars.config import to_container

        data = _redacted(to_container(d))  # e.g. the resolved config.yaml: sweep.storage without its password
        self._call(f"log dict {name}", self.client.log_dict, self.run_id, data, name,
                   keep=self._keep_artifact(), keep_kwargs={"text": _dict_text(data, name), **self._named(name)})

    def log_files(self, files: Mapping[str, str | bytes | os.PathLike[str]]) -> None:
        """Several artifacts in one store call (``log_artifacts`` of a staged folder) instead of one call each:
        ``{name: content}``, ``name`` a run-relative path (``"config.yaml"``, ``"plots/x.png"``), ``content`` a
        ``Path`` (the file is copied), a ``str`` (text, redacted and UTF-8 encoded as :meth:`log_text` does) or
        ``bytes`` (written as they are). The files recorded are those one call per file would record; when the
        upload fails after its retries each file is kept in the spool, like a single artifact."""
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="bars-artifacts-") as tmp:
            staged: dict[str, Path] = {}
            for name, content in files.items():
                dst = Path(tmp, *name.split("/"))
                dst.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    dst.write_bytes(content)
                elif isinstance(content, str):
                    dst.write_bytes(redact(content).encode("utf-8"))
                else:
                    shutil.copyfile(content, dst)
                staged[name] = dst
            spool = self.tracker.spool

            def keep(run_id: str, *, experiment: str = "") -> Path:
                kept = Path()
                for name, dst in staged.items():
                    folder, _, base = name.rpartition("/")
                    kept = spool.artifact(run_id, dst, name=base, artifact_path=folder or None,
                                          experiment=experiment)
                return kept

            self._call(f"log artifacts {', '.join(staged)}", self._log_folder, tmp,
                       keep=keep if spool is not None else None)

    def _log_folder(self, local_dir: str) -> None:
        """``log_artifacts`` of a folder. Into a local (``file:``) artifact root known from the run's creation the
        files are copied directly, as MLflow's local repository does, without the store call in which the client
        first looks the run's artifact location up; any other location goes through the client."""
        if (self.artifact_uri or "").startswith("file:"):
            from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

            LocalArtifactRepository(self.artifact_uri).log_artifacts(local_dir)
        else:
            self.client.log_artifacts(self.run_id, local_dir)

    def log_figure(self, fig: Any, name: str) -> None:
        """Save a matplotlib figure as a PNG artifact (and close it). Rendered once: the same bytes are uploaded
        and, when the upload fails, kept in the spool (MLflow's ``log_figure`` would render it again)."""
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            png = buf.getvalue()
        finally:
            with contextlib.suppress(Exception):
                import matplotlib.pyplot as plt

                plt.close(fig)
        named = self._named(name)
        with tempfile.TemporaryDirectory(prefix="bars-figure-") as tmp:
            path = Path(tmp) / named["name"]
            path.write_bytes(png)
            self._call(f"log figure {name}", self.client.log_artifact, self.run_id, str(path),
                       named["artifact_path"], keep=self._keep_artifact(), keep_kwargs={"text": png, **named})

    # -- end ------------------------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        self.end("FAILED", failure_tags(exc))

    def end(self, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        """End the run; then send what its spool kept (the store may be back), or say where it is kept."""
        if self.ended:
            return
        self.flush()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if tags:
            self.set_tags(tags)
        spool = self.tracker.spool
        self._call(f"end run {status}", self.client.set_terminated, self.run_id, status,
                   keep=spool.end if spool else None, keep_kwargs={"status": status})
        self.ended = True
        self.status = status
        if spool is not None and spool.pending(self.run_id):
            self.tracker.send_spool(self.run_id)


def _dict_text(data: Any, name: str) -> str:
    if name.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_dump(data, sort_keys=False)
    return json.dumps(data, indent=2, default=str)


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
