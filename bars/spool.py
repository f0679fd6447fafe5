"""The local spool of tracking records a store could not take: nothing a run measured is silently lost.

When the tracking store goes away mid-run (a server restarted, a network cut, a database locked for too long),
``bars.tracking`` retries each call, then appends what it could not send to this run's spool file instead of
dropping it, and training goes on. At the end of the run the spool is sent (if the store is back) or reported
with its path; any later ``bars`` command that opens the same store sends the spools of runs whose process is
gone (and ``bars sync`` does only that).

Layout under the spool folder (``tracking.spool_dir``, default ``<project>/tracking_spool``)::

    <run id>.jsonl          one JSON object per line: a header, then the records in the order they failed
    <run id>.files/         copies of the artifacts the records name

Header: ``{"spool": 1, "run_id", "store" (the store's URI with any password removed), "owner" (host:pid:start
of the process writing it), "experiment"}``. Records: ``{"op": "batch", "metrics": [[key, value, timestamp ms,
step]], "params": [[key, value]], "tags": [[key, value]]}``, ``{"op": "artifact", "file": <name in .files/>,
"path": <artifact folder or null>}``, ``{"op": "end", "status": "FINISHED"}``. Each line is written with one
``write`` in append mode, so a killed process leaves whole lines (a torn last line is ignored on reading).

This module only reads and writes the spool; it imports neither mlflow nor ``bars.tracking`` (which sends the
records: ``bars.tracking.sync_spools``). :func:`main` is ``bars sync``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bars import process
from bars.config import safe_url
from bars.fileio import file_lock

VERSION = 1


@dataclass(frozen=True)
class SpoolFile:
    """One run's spool as read back."""

    path: Path
    run_id: str
    store: str
    owner: str
    experiment: str
    records: tuple[dict[str, Any], ...]

    @property
    def files(self) -> Path:
        return files_dir(self.path)

    def owner_alive(self) -> bool | None:
        return process.identity_alive(self.owner)


def files_dir(path: Path) -> Path:
    return path.with_suffix(".files")


class Spool:
    """The spool folder of one tracking store, for this process's runs."""

    def __init__(self, folder: str | os.PathLike[str], store: str) -> None:
        self.folder = Path(folder)
        self.store = safe_url(store)

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.jsonl"

    def _append(self, run_id: str, record: dict[str, Any], experiment: str = "") -> Path:
        path = self.path(run_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = []
        if not path.exists():
            lines.append({"spool": VERSION, "run_id": run_id, "store": self.store,
                          "owner": process.identity(), "experiment": experiment})
        lines.append(record)
        data = "".join(json.dumps(x, separators=(",", ":"), default=str) + "\n" for x in lines).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return path

    def batch(self, run_id: str, *, metrics: list[list[Any]] | None = None, params: list[list[Any]] | None = None,
              tags: list[list[Any]] | None = None, experiment: str = "") -> Path:
        rec: dict[str, Any] = {"op": "batch"}
        if metrics:
            rec["metrics"] = metrics
        if params:
            rec["params"] = params
        if tags:
            rec["tags"] = tags
        return self._append(run_id, rec, experiment)

    def artifact(self, run_id: str, local: str | os.PathLike[str] | None = None, *, name: str | None = None,
                 text: str | bytes | None = None, artifact_path: str | None = None, experiment: str = "") -> Path:
        """Keep a copy of the file ``local`` (or ``text`` under ``name``) to be logged later under
        ``artifact_path``."""
        files = files_dir(self.path(run_id))
        files.mkdir(parents=True, exist_ok=True)
        base = name or Path(str(local)).name
        n = sum(1 for _ in files.iterdir())
        slot = files / f"{n:04d}"
        slot.mkdir()
        dst = slot / base
        if local is not None:
            shutil.copyfile(local, dst)
        else:
            dst.write_bytes(text if isinstance(text, bytes) else str(text).encode())
        return self._append(run_id, {"op": "artifact", "file": f"{slot.name}/{base}", "path": artifact_path},
                            experiment)

    def end(self, run_id: str, status: str, experiment: str = "") -> Path:
        return self._append(run_id, {"op": "end", "status": status}, experiment)

    def pending(self, run_id: str) -> bool:
        return self.path(run_id).exists()


def read(path: str | os.PathLike[str]) -> SpoolFile | None:
    """A spool file as written (a torn last line, from a process killed while writing it, is left out); None
    when it has no readable header."""
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return None
    out: list[dict[str, Any]] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue  # the torn last line of a killed writer
    if not out or out[0].get("spool") != VERSION:
        return None
    head = out[0]
    return SpoolFile(path, str(head["run_id"]), str(head.get("store", "")), str(head.get("owner", "")),
                     str(head.get("experiment", "")), tuple(out[1:]))


def pending(folder: str | os.PathLike[str], store: str | None = None) -> list[SpoolFile]:
    """The spools in ``folder`` (of ``store`` when given), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    want = None if store is None else safe_url(store)
    out = []
    for p in sorted(folder.glob("*.jsonl")):
        s = read(p)
        if s is not None and (want is None or s.store == want):
            out.append(s)
    return out


@contextlib.contextmanager
def claimed(spool: SpoolFile) -> Iterator[bool]:
    """Hold the spool's lock (two processes never send the same spool); yields False when another process
    holds it now."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(spool.path.with_suffix(".lock"), timeout=0))
        except TimeoutError:
            yield False
            return
        yield True


def remove(spool: SpoolFile) -> None:
    """Delete a spool that was sent."""
    shutil.rmtree(spool.files, ignore_errors=True)
    spool.path.unlink(missing_ok=True)
    spool.path.with_suffix(".lock").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``bars sync [hydra overrides]``: send the spooled records of finished or dead runs to the tracking store
    of the composed config (``tracking.uri``); exit 1 if some remain."""
    import sys

    from bars.config import compose

    args = sys.argv[1:] if argv is None else list(argv)
    cfg = compose(args)
    from bars.tracking import sync_spools

    sent, left = sync_spools(str(cfg.tracking.uri), str(cfg.tracking.spool_dir), say=print)
    print(f"bars sync: {sent} spool(s) sent, {left} left in {cfg.tracking.spool_dir}")
    return 1 if left else 0


__all__ = ["Spool", "SpoolFile", "claimed", "main", "pending", "read", "remove"]
