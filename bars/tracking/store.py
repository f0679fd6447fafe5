"""The tracking store: its URI, its safe first use (:func:`ensure_store`), the retry helpers, and sending the
records a spool kept (:func:`replay_spool`, :func:`sync_spools`). Part of :mod:`bars.tracking`."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bars.config import project_root, safe_url
from bars.fileio import file_lock
from bars.tracking_helper import MAX_TAG_VALUE  # noqa: F401 - one limit for both sides of the helper

MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

# MLflow error codes that retrying cannot fix (bad input, not a flaky store).
_PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                     "BAD_REQUEST", "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED"}

STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")


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


_READY: set[str] = set()


def store_lock(uri: str) -> Path | None:
    """The lock file that guards the first use of a SQLite store (``<db>-init.lock``); None for other stores."""
    db = sqlite_path(uri)
    return None if db is None else db.with_name(db.name + "-init.lock")


def ensure_store(uri: str) -> None:
    """Create (or migrate) a SQLite tracking store once, under a file lock, before this process uses it.

    MLflow creates and migrates a SQLite store on first open, in every process that opens it; several at once
    race and leave the file corrupted for good ("table _alembic_tmp_... already exists"). Here the first process
    holds ``<db>-init.lock`` while MLflow creates the tables; the others wait, then find them complete. Once per
    process and store; other stores (servers, PostgreSQL) migrate on their own side."""
    uri = resolve_uri(uri)
    lock = store_lock(uri)
    if lock is None or uri in _READY:
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock):
        db = sqlite_path(uri)
        assert db is not None
        for stale in db.parent.glob(f"{db.name}.tmp-*"):  # a creation killed before its rename (we hold the lock)
            stale.unlink(missing_ok=True)
        if not db.exists() or db.stat().st_size == 0:
            # A new store is created whole under a temporary name, then renamed into place: MLflow's first-use
            # schema migration takes seconds and a process killed in it (kill -9, a job runner's timeout) would
            # otherwise leave a half-migrated file that no later command can open ("table _alembic_tmp_...
            # already exists"). The rename is atomic; the next process finds either no store or a complete one.
            tmp = db.with_name(f"{db.name}.tmp-{os.getpid()}")
            query = uri.partition("?")[1] + uri.partition("?")[2]  # e.g. ?timeout=30, kept for the temporary
            tmp_uri = f"sqlite:///{tmp}{query}"
            try:
                client = MlflowClient(tracking_uri=tmp_uri)
                client.search_experiments(max_results=1)
                _dispose(client)
                os.replace(tmp, db)
            finally:
                tmp.unlink(missing_ok=True)
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    _READY.add(uri)


def _dispose(client: MlflowClient) -> None:
    """Close the connections the client's SQLite store pooled (best effort: closing early is tidiness, the file
    is complete either way), so that no open handle writes to the file after it was renamed."""
    with contextlib.suppress(Exception):
        engine = getattr(client._tracking_client.store, "engine", None)
        if engine is not None:
            engine.dispose()


def _short(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(
        value, (list, dict, tuple)) else str(value)
    if len(s) > limit:
        s = s[: limit - 15] + "...[truncated]"
    return s


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


# ------------------------------------------------------------------------------------------------ spool replay


def replay_spool(client: MlflowClient, kept: Any) -> bool:
    """Send a spool's records in order (``bars.spool.SpoolFile``), resuming after the ones an earlier try sent
    (counted in ``<run id>.sent``); True when all were sent. Every record is safe to send twice (same metric
    points, same params, tags overwritten, artifacts replaced)."""
    done_file = kept.path.with_suffix(".sent")
    try:
        done = int(done_file.read_text() or 0)
    except (OSError, ValueError):
        done = 0
    for i, rec in enumerate(kept.records):
        if i < done:
            continue
        try:
            op = rec.get("op")
            if op == "batch":
                client.log_batch(kept.run_id, metrics=[Metric(k, float(v), int(ts), int(st))
                                                       for k, v, ts, st in rec.get("metrics", [])],
                                 params=[Param(k, v) for k, v in rec.get("params", [])],
                                 tags=[RunTag(k, v) for k, v in rec.get("tags", [])])
            elif op == "artifact":
                client.log_artifact(kept.run_id, str(kept.files / rec["file"]), rec.get("path"))
            elif op == "end":
                client.set_terminated(kept.run_id, rec.get("status", "FINISHED"))
        except Exception:  # noqa: BLE001 - the store is still away: keep the rest for the next try
            return False
        done_file.write_text(str(i + 1))
    done_file.unlink(missing_ok=True)
    return True


def sync_spools(uri: str | None, spool_dir: str | os.PathLike[str] | None,
                say: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Send the spools of ``uri``'s runs kept in ``spool_dir`` whose process is gone (or is this one);
    ``(sent, left)``. Spools of live runs elsewhere are left to them. Never raises for an unreachable store."""
    from bars import spool as sp

    if not spool_dir:
        return 0, 0
    uri = resolve_uri(uri)
    found = sp.pending(spool_dir, uri)
    if not found:
        return 0, 0
    me = sp.process.identity()
    sent = left = 0
    try:
        ensure_store(uri)
        client = MlflowClient(tracking_uri=uri)
    except Exception:  # noqa: BLE001
        return 0, len(found)
    for kept in found:
        if kept.owner != me and kept.owner_alive() is not False:
            continue  # a live run (or one on another host) sends its own
        with sp.claimed(kept) as mine:
            if not mine:
                continue
            if replay_spool(client, kept):
                sp.remove(kept)
                sent += 1
                if say:
                    say(f"bars.tracking: sent {len(kept.records)} kept record(s) of run {kept.run_id} to "
                        f"{safe_url(uri)}")
            else:
                left += 1
    return sent, left
