"""Atomic output: a dataset folder appears complete (splits + feature_spec.json + manifest.json) or not at all.

Everything is written into a hidden temporary sibling folder that is renamed into place at the end; on any
error the temporary folder is removed, so a failed run leaves nothing behind and a rerun starts clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from bars.fileio import atomic_write_text

MANIFEST = "manifest.json"
SPEC = "feature_spec.json"


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final``; rename it to ``final`` when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():  # a concurrent run finished first, or a broken folder without manifest
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
