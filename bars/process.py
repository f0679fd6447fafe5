"""The one definition of process liveness: is the process that owns a run (MLflow) or a trial (Optuna) still alive?

A process is named by ``(host, pid, start)``: ``start`` is its start time in clock ticks since boot
(``/proc/<pid>/stat`` field 22), which tells a reused pid apart from the original process. Only processes on
this host can be judged; for another host the answer is ``None`` (unknown), and callers leave such records
alone.

- :func:`process_start` / :func:`process_alive` for a pid on this host;
- :func:`identity` / :func:`identity_alive` for the ``"host:pid:start"`` string a sweep worker writes into its
  trials (``start`` is ``0`` when unknown).

Imports nothing from bars: every layer may use it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["identity", "identity_alive", "process_alive", "process_start"]

_UNKNOWN_START = (None, "", "0")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, comes first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_start(pid: int) -> str | None:
    """Start time of a process on this host in clock ticks since boot, or None when unknown."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` on this host is alive: it exists, is not a zombie, and (when ``start`` is known)
    is the same process that started at ``start``, not a later one that reused the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    if start not in _UNKNOWN_START:
        now = fields[19] if fields and len(fields) > 19 else None
        if now is not None and now != start:
            return False  # the pid was reused
    return True


def identity(pid: int | None = None) -> str:
    """``"host:pid:start"`` of this process (or of ``pid`` on this host); start ``0`` when unknown."""
    pid = os.getpid() if pid is None else int(pid)
    return f"{socket.gethostname()}:{pid}:{process_start(pid) or 0}"


def identity_alive(ident: str) -> bool | None:
    """True/False for a process of this host named by :func:`identity`; None for another host or a malformed
    identity (cannot tell)."""
    try:
        host, pid_s, start = ident.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return process_alive(pid, start)
