"""What a bars process does as it starts: :func:`collector_paused`, Python's cyclic garbage collector held off
while the process imports its heavy modules.

Importing torch, hydra, pyarrow and polars (a ``bars train`` process) or mlflow and SQLAlchemy (its tracking
helper) creates ~340,000 objects that live as long as the process. The collector runs a pass every 700 new
container objects and a full pass over everything alive whenever a quarter more has piled up since the last, so
an import of that size pays for many full passes over a growing heap: 0.2 s of the 1.1 s that ``import torch,
bars.config, bars.run`` takes on a 2-core host (issue 16's fixed cost per process). Held off during the imports,
and the objects alive at the end frozen (``gc.freeze``: moved out of the collector's generations, never scanned
again, as CPython's documentation advises for a process's long-lived start-up state), the later passes scan only
what the command itself creates. Cyclic garbage left by the imports themselves (little) stays with the frozen
objects for the life of the process.

Imports nothing from bars: every layer may use it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_paused"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off inside the block; on leaving it, every object alive is frozen and the collector is back
    as it was (off stays off). For a process's own start-up only: a caller in a long-lived process (a test
    session) would freeze its garbage with it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
