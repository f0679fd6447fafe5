"""Atomic output: a dataset folder appears complete (splits + feature_spec.json + manifest.json) or not at all.

Everything is written into a hidden temporary sibling folder (named for its process: ``bars.fileio.temp_name``)
that is renamed into place at the end; on any error the temporary folder is removed, so a failed run leaves
nothing behind and a rerun starts clean. A process killed with SIGKILL cannot clean up: the next run removes
the temporaries of dead processes it finds next to its output (``bars.fileio.remove_stale_temps``). A full disk
raises ``bars.fileio.DiskFullError`` naming the file being written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from bars.fileio import DiskFullError, atomic_write_text, disk_full, remove_stale_temps, temp_name

MANIFEST = "manifest.json"
SPEC = "feature_spec.json"


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final``; rename it to ``final`` when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent)  # left by killed runs
    tmp = final.parent / f"{temp_name(final.name)}dir"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():  # a broken folder without a manifest (callers hold the dataset's lock)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(_written(exc, tmp, final), exc) from exc
        raise


def _written(exc: BaseException, tmp: Path, final: Path) -> Path:
    """The output file a write error names (its place in ``final``), else ``final`` itself."""
    name = getattr(exc, "filename", None)
    if name:
        p = Path(name)
        if tmp in p.parents:
            return final / p.relative_to(tmp)
    return final


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
