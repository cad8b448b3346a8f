"""Handing freed heap memory back: on glibc, trimming after freeing big blocks lowers RSS."""

from __future__ import annotations

import ctypes.util
import platform
from pathlib import Path

import pytest

from heatshift import heap


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="heatshift.heap acts on glibc only (elsewhere it is a no-op)",
)


@glibc
def test_trim_returns_freed_heap_blocks_to_the_kernel() -> None:
    assert ctypes.util.find_library("c")
    # 3,000 blocks of 64 KiB: under the mmap threshold, so they come from the heap and stay
    # there once freed, keeping RSS up until trimmed.
    blocks = [bytearray(64 * 1024) for _ in range(3000)]
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page
    held = _rss_kib()
    del blocks, b
    before = _rss_kib()
    assert heap.trim()
    after = _rss_kib()
    assert held - after > 100 * 1024  # most of the ~190 MiB went back
    assert after < before


@glibc
def test_the_arena_limit_applies() -> None:
    assert heap.limit_arenas(2)
