"""Keeping the operator's resident memory near what it uses, on glibc.

A planning cycle allocates and frees tens of megabytes (the snapshot, the plan, pages of a
list), partly in a worker thread. glibc keeps what is freed for reuse, in one arena per thread
it has seen, and its mmap threshold grows with the largest blocks freed, so large blocks move
from mmap (returned at once) to the heap (kept). The process's RSS then ratchets up to the
sum of its worst moments, well above what it holds. Two standard remedies, as other long-lived
Python services apply them (Dask's workers trim after work; MALLOC_ARENA_MAX=2 is the usual
container setting):

- :func:`limit_arenas` at start-up: at most two malloc arenas, whatever the thread count;
- :func:`trim` after each cycle: hand the freed heap back to the kernel.

Both are no-ops where the C library is not glibc (musl, macOS). Called by
:mod:`heatshift.handlers` and :mod:`heatshift.kube.cycle`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""
ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None  # not glibc
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (before worker threads start); whether it applied."""
    libc = _glibc()
    applied = libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1
    log.debug("malloc arenas limited to %d: %s", arenas, applied)
    return applied


def trim() -> bool:
    """Return freed heap memory to the kernel; whether any was."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1
