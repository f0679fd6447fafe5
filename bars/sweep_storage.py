"""Where a sweep's study lives: the Optuna storage of ``sweep.storage`` (a journal file by default, SQLite, or
PostgreSQL for many machines), opened once per process with a first-use lock so that several launchers and
workers starting together on a new database do not race to create its tables.

Split out of :mod:`bars.study` (which re-exports every public name here); never imports mlflow or the trainer.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf


def sweep_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.sweep.dir))


def storage_url(cfg: DictConfig) -> str:
    """``sweep.storage`` or the default journal file; journal paths are returned as ``journal:///abs/path``."""
    s = cfg.sweep.storage
    if s in (None, "", "null"):
        return "journal://" + str((sweep_dir(cfg) / "study.journal").resolve())
    s = str(s)
    if "://" not in s:  # a plain path: a journal file
        return "journal://" + str(Path(s).resolve())
    return s


def is_journal(url: str) -> bool:
    return url.startswith("journal://")


@contextlib.contextmanager
def first_use_lock(url: str) -> Iterator[None]:
    """Held while a storage is opened for the first time and the study created: a file lock next to a journal
    or SQLite file (``<file>.init.lock``), a PostgreSQL advisory lock for ``postgresql://`` (any host). Optuna
    creates its tables and the study in every process that asks; several at once on a new database race
    (duplicate tables, a study created twice). Other URLs: no lock. Re-entrant within a process (``open_storage``
    takes it too, inside a launcher that already holds it)."""
    key = (url, threading.get_ident())
    if key in _FIRST_USE_HELD:
        yield
        return
    _FIRST_USE_HELD.add(key)
    try:
        with _first_use_lock(url):
            yield
    finally:
        _FIRST_USE_HELD.discard(key)


_FIRST_USE_HELD: set[tuple[str, int]] = set()  # (URL, thread) pairs that hold its first-use lock


@contextlib.contextmanager
def _first_use_lock(url: str) -> Iterator[None]:
    from bars.fileio import file_lock

    if is_journal(url) or url.startswith("sqlite:///"):
        path = Path(url[len("journal://"):] if is_journal(url) else url[len("sqlite:///"):].split("?", 1)[0])
        with file_lock(path.with_name(path.name + ".init.lock")):
            yield
        return
    if url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_KEY})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_KEY})
        finally:
            engine.dispose()
        return
    yield


_ADVISORY_KEY = 0x0BA25_0001  # "bars" first-use lock of an Optuna database


def open_storage(url: str, cfg: DictConfig | None = None) -> optuna.storages.BaseStorage:
    if is_journal(url):
        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    s = cfg.sweep if cfg is not None else OmegaConf.create({})
    kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        kwargs = {
            "heartbeat_interval": int(s.get("heartbeat_interval") or 10),
            "grace_period": int(s.get("grace_period") or 30),
            "heartbeat_stale_trial_callback": _retry_callback(s.get("max_retry", 3)),
        }
        engine = {"pool_pre_ping": True}
        with first_use_lock(url), _experimental_ok():  # Optuna creates its tables on first open: one at a time
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
    with first_use_lock(url):
        return optuna.storages.RDBStorage(url)


def _retry_callback(max_retry: int | None) -> Any:
    with _experimental_ok():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def heartbeat_callback(storage: optuna.storages.BaseStorage) -> Callable[..., None] | None:
    """The retry callback an RDB storage with heartbeats was opened with (None for journals)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        return storage.get_heartbeat_stale_trial_callback()
    return None


@contextlib.contextmanager
def _experimental_ok() -> Iterator[None]:
    """Optuna marks the heartbeat API experimental; its warning is noise for users of a sweep."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


__all__ = ["first_use_lock", "heartbeat_callback", "is_journal", "open_storage", "storage_url", "sweep_dir"]
