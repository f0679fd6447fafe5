"""The one definition of an atomic file write, of a file digest, of a file lock and of the temporary names that
every writer uses, for every module that writes or checks files.

- :func:`atomic_write` writes through a callback into a hidden temporary file next to the target (same folder,
  so the final ``os.replace`` is atomic on POSIX), then renames it into place; on any error the temporary file
  is removed and the target is left as it was. Readers see the old file or the complete new one, never a part.
  :func:`atomic_write_text` is the common case. (A whole folder is made atomic by ``bars.data.writer.atomic_dir``.)
- Temporary names carry their owner process (:func:`temp_name`: ``.<name>.tmp-<pid>-<start>-<random>``), so a
  temporary left by a process killed with SIGKILL (which runs no cleanup) is recognised and removed by the next
  run that looks (:func:`remove_stale_temps`), never one of a live process.
- A full disk (``ENOSPC``, or a quota: ``EDQUOT``) while writing raises :class:`DiskFullError` naming the file
  and the free space; the temporary is removed, so nothing half-written is left.
- :func:`file_lock`: an exclusive ``flock`` on a lock file, for work that must happen once however many
  processes start together (creating the tracking store, preparing a dataset, creating a sweep's study). The
  kernel releases it when the holder dies, even by SIGKILL.
- :func:`file_digest`: the hex digest of a file's bytes (``hashlib.file_digest``: one reused buffer, GIL
  released), or with ``content=True`` of its decompressed content when the file is gzip-compressed (so
  ``train.csv`` and ``train.csv.gz`` verify against the same published md5).

Imports nothing from bars but ``bars.process`` (the other base utility): every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bars.process import process_alive, process_start

__all__ = ["DiskFullError", "atomic_write", "atomic_write_text", "disk_full", "file_digest", "file_lock",
           "is_gzip", "remove_stale_temps", "temp_name", "temp_owner"]

_CHUNK = 8 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)
# .<name>.tmp-<pid>-<start>-<anything>  (files: atomic_write; folders: bars.data.writer.atomic_dir)
_TEMP = re.compile(r"^\..*\.tmp-(\d+)-(\d+)-[^/]*$")


class DiskFullError(OSError):
    """No space left (or the quota reached) while writing ``path``; nothing half-written was left behind."""

    def __init__(self, path: str | os.PathLike[str], cause: BaseException | None = None) -> None:
        self.path = Path(path)
        free = _free_bytes(self.path)
        where = f"{_human(free)} free on the filesystem of {self.path.parent}" if free is not None else \
            f"free space on the filesystem of {self.path.parent} unknown"
        detail = f" ({cause})" if cause is not None else ""
        super().__init__(errno.ENOSPC, f"{self.path}: no space left on device while writing it ({where}){detail}; "
                                       f"nothing was left half-written: free some space (or point the output "
                                       f"elsewhere) and rerun")

    def __str__(self) -> str:
        return str(self.args[1])


def _free_bytes(path: Path) -> int | None:
    for p in (path.parent, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or an error of a library that wraps one, e.g. pyarrow's) is a full disk."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # torch wraps the OSError of a full disk in a RuntimeError
        seen.add(id(e))
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in _FULL):
            return True
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def temp_name(name: str) -> str:
    """A hidden temporary name for ``name`` that carries this process: ``.<name>.tmp-<pid>-<start>-``."""
    pid = os.getpid()
    return f".{name}.tmp-{pid}-{process_start(pid) or 0}-"


def temp_owner(name: str) -> tuple[int, str] | None:
    """``(pid, start)`` of the process that made the temporary ``name``; None when it is not a temporary name."""
    m = _TEMP.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def remove_stale_temps(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Remove the temporaries (files and folders) in ``folder`` whose owner process is gone (killed, crashed);
    returns what was removed. A temporary of a live process is never touched. ``recursive``: also in every
    subfolder (not inside temporaries)."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        owner = temp_owner(e.name)
        if owner is not None:
            if not process_alive(owner[0], owner[1] if owner[1] != "0" else None):
                p = Path(e.path)
                with contextlib.suppress(OSError):
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(p)
        elif recursive and e.is_dir(follow_symlinks=False):
            removed += remove_stale_temps(e.path, recursive=True)
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary sibling of ``path`` (same suffix, so tools that pick a format by
    extension still work), then rename it to ``path``. Creates the parent folder. Returns ``path``. A full disk
    raises :class:`DiskFullError` (the temporary removed, ``path`` untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_name(path.name), suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path, exc) from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, timeout: float | None = None,
              waiting: Callable[[], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, when missing) for the block.

    Blocks until the lock is free; with ``timeout`` (seconds) raises ``TimeoutError`` naming the lock instead.
    ``waiting()`` is called once when the lock is held by another process (e.g. to say so). The lock file is
    left in place (removing it would race with a process about to lock it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{path}: still locked by another process after {timeout} s") from None
                    time.sleep(0.05)
        yield path
    finally:
        os.close(fd)  # releases the lock


def is_gzip(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def file_digest(path: str | os.PathLike[str], algo: str = "sha256", *, content: bool = False) -> str:
    """Hex digest (``algo``: any hashlib name) of the file's bytes, or with ``content=True`` of its decompressed
    content when it is gzip-compressed."""
    if not (content and is_gzip(path)):
        with open(path, "rb") as f:
            return hashlib.file_digest(f, algo).hexdigest()
    h = hashlib.new(algo)
    with gzip.open(path, "rb") as f:
        while b := f.read(_CHUNK):
            h.update(b)
    return h.hexdigest()
