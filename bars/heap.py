"""``train.reuse_freed_memory``: keep freed host buffers in the process for the next training step.

A CPU training step allocates and frees the same large buffers every batch: the gradient of each embedding table
(``[rows, d]`` float32: 64 MiB for a 1M-row, 16-wide table), concatenated activations, products. With glibc's
defaults every allocation of 32 MiB or more (and smaller ones, while its threshold adapts) is a fresh ``mmap``,
returned with ``munmap`` when freed, and the heap's top is trimmed back to the system once 128 KiB or more is free:
the next step's buffer then starts as untouched pages, and the first write to each 4 KiB page is a page fault in
which the kernel zeroes it. Measured at the Criteo shape (``tests/reference/bench_reference.py``, GDCN, 1M
embedding rows, batch 4096): 70 ms of a 460 ms step was the embedding gradient's ``fill_`` faulting in its pages.

:func:`reuse_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every allocation comes from the heap, where a freed
buffer is reused) and ``M_TRIM_THRESHOLD`` to 2 GiB - 1 (freed memory at the heap's top stays in the process up to
that much): the next step finds its buffers already mapped. The numbers a run computes do not change (only where
buffers live); the process keeps its peak heap instead of returning it between steps, which is what a step that
allocates the same sizes again needs anyway. Where the main arena cannot grow, glibc still maps memory (its
fallback), so nothing fails for want of ``mmap``.

A prepare that builds a dataset (``bars.data.prepare``) follows the same setting: the reader's block buffers and
the encoder's batches are the same sizes every block (45M Criteo rows: kernel time 11-20 -> 8-10 s).

The setting is process-wide and stays for the rest of the process once made (a training process's CLI, a sweep
worker): :func:`reuse_freed_memory` is idempotent, and ``false`` leaves the C library's defaults alone. On a C
library other than glibc (musl, macOS) it does nothing and says so (:func:`state`, the run's ``host_heap`` tag).

Imports nothing from bars and not torch: every layer may use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["reuse_freed_memory", "state"]

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_BYTES = 2**31 - 1  # mallopt takes a C int

_state: str | None = None  # None: not asked in this process


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version  # glibc only
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        version.restype = ctypes.c_char_p
        return libc
    except (OSError, AttributeError):
        return None


def reuse_freed_memory() -> str:
    """Make freed heap memory stay in this process (see the module's docstring); returns :func:`state`."""
    global _state
    if _state is None:
        libc = _glibc()
        if libc is None:
            _state = "system default (not glibc)"
        elif libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1:
            version = libc.gnu_get_libc_version().decode()
            _state = f"reuse (glibc {version}: M_MMAP_MAX 0, M_TRIM_THRESHOLD {TRIM_BYTES})"
        else:
            _state = "system default (glibc refused mallopt)"
    return _state


def state() -> str:
    """What this process's allocator does with freed memory: ``reuse (glibc ...)`` once
    :func:`reuse_freed_memory` took effect, else ``system default`` (with the reason when it was asked for)."""
    return "system default" if _state is None else _state
