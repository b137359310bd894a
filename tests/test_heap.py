"""faceattr/serve/heap.py: the glibc heap trim after large decodes."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest

from faceattr.serve import heap
from faceattr.serve.heap import TRIM_AFTER_PIXELS, return_freed_memory_after_large_images

MIB = 1024 * 1024


def test_only_large_images_are_followed_by_a_trim(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    assert not return_freed_memory_after_large_images(TRIM_AFTER_PIXELS - 1) and calls == []
    assert return_freed_memory_after_large_images(TRIM_AFTER_PIXELS) and calls == [0]
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)  # no glibc: nothing to call
    assert not return_freed_memory_after_large_images(10 * TRIM_AFTER_PIXELS)


def test_malloc_trim_is_found_exactly_on_glibc():
    assert (heap._malloc_trim() is not None) == (platform.libc_ver()[0] == "glibc")


def _rss() -> int:
    """This process's resident memory in bytes (/proc/self/statm: pages)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_the_trim_gives_memory_freed_inside_the_heap_back_to_the_os():
    """40 MB of heap blocks (each under glibc's mmap threshold, like Pillow's image blocks), freed behind a block
    still in use: ``free`` keeps them resident (only the top of the heap is returned), the trim after a large image
    returns them."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(100_000) for _ in range(400)]
    for block in blocks:
        ctypes.memset(block, 1, 100_000)  # resident
    pin = libc.malloc(100_000)  # allocated after them: the freed blocks are not the top of the heap
    ctypes.memset(pin, 1, 100)
    try:
        for block in blocks:
            libc.free(block)
        kept = _rss()
        assert not return_freed_memory_after_large_images(TRIM_AFTER_PIXELS - 1)  # a small image: no trim
        assert _rss() > kept - 10 * MIB
        assert return_freed_memory_after_large_images(TRIM_AFTER_PIXELS)
        assert _rss() < kept - 30 * MIB, f"{(kept - _rss()) / MIB:.1f} MiB returned of 38"
    finally:
        libc.free(pin)
