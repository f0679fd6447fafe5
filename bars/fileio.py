"""The one definition of an atomic file write and of a file digest, used by every module that writes or checks
files.

- :func:`atomic_write` writes through a callback into a hidden temporary file next to the target (same folder,
  so the final ``os.replace`` is atomic on POSIX), then renames it into place; on any error the temporary file
  is removed and the target is left as it was. Readers see the old file or the complete new one, never a part.
  :func:`atomic_write_text` is the common case. (A whole folder is made atomic by ``bars.data.writer.atomic_dir``.)
- :func:`file_digest`: the hex digest of a file's bytes (``hashlib.file_digest``: one reused buffer, GIL
  released), or with ``content=True`` of its decompressed content when the file is gzip-compressed (so
  ``train.csv`` and ``train.csv.gz`` verify against the same published md5).

Imports nothing from bars: every layer may use it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "file_digest", "is_gzip"]

_CHUNK = 8 << 20


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary sibling of ``path`` (same suffix, so tools that pick a format by
    extension still work), then rename it to ``path``. Creates the parent folder. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


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
