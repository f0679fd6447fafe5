"""MLflow run tracking: the only package in bars that writes through mlflow (``bars.records`` reads).

Modules: ``store`` (URI, first use, retry helpers, spool replay), ``runs`` (:class:`Tracker`, :class:`TrackedRun`,
:func:`end_run`), ``reconcile``; import everything from ``bars.tracking``.

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
- Nothing measured is silently lost: with a spool folder (``Tracker(..., spool_dir=...)``, ``tracking.spool_dir``
  in the config) a write that still fails after its retries is kept in the run's spool (``bars.spool``) and sent
  when the run ends, or by the next command that opens the store (:func:`sync_spools`, ``bars sync``).
- First use is safe: a new SQLite store is created (and an old one migrated) once, under a file lock next to it
  (:func:`ensure_store`), whatever number of processes open it at once; MLflow's own first-use migration run
  by several processes together corrupts the file for good.
- Passwords in storage URLs never reach logs, params or tags (``bars.config.redact``).
- Reading records back (a run's config, a plain client) is ``bars.records``.

A relative ``sqlite:///x.db`` URI is resolved against the project root (``bars.config.project_root()``), never the
working directory. For a SQLite store, experiments created here put their artifacts in ``mlartifacts/<experiment>``
next to the database file (MLflow's own default, ``./mlruns``, depends on the working directory).
"""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Our retry loop governs; MLflow's own HTTP retries (7 tries, backoff 2 -> minutes) would multiply with it.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

from mlflow.entities import RunStatus

from bars.environment import environment_report, environment_tags, git_info, hardware_description
from bars.tracking.reconcile import reconcile
from bars.tracking.runs import RunSummary, TrackedRun, Tracker, end_run, tracker_of
from bars.tracking.store import (
    STATUSES,
    ensure_store,
    replay_spool,
    resolve_uri,
    sqlite_path,
    store_lock,
    sync_spools,
)
from bars.tracking_helper import TrackingWarning, dict_text

__all__ = [
    "STATUSES", "RunStatus", "RunSummary", "TrackedRun", "Tracker", "TrackingWarning", "dict_text", "end_run",
    "ensure_store",
    "environment_report", "environment_tags", "git_info", "hardware_description",
    "reconcile", "replay_spool", "resolve_uri", "sqlite_path", "store_lock", "sync_spools",
    "tracker_of",
]
