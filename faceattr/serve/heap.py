"""Giving the heap memory that decoding a large image freed back to the OS (glibc ``malloc_trim``).

glibc's malloc keeps freed memory for reuse; Pillow's 16 MiB image blocks come from per-thread heap arenas, and
without a trim the API process's RSS grows with every decoding thread that ever held a large image (measured with 8
concurrent 49-megapixel WebPs, two decoded at a time: the worker went from 1058 to 4054 MiB and kept it without a
trim, and kept +16 to +92 MiB with one). A trim after the rare large image keeps that bound without changing how the
model allocates: the earlier fix, a 1 MiB ``M_MMAP_THRESHOLD`` for the whole process, made every activation of a
batch an mmap/munmap and the in-process model ~45% slower. Without glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

#: Decodes of at least this many pixels (3 MB of RGB and more) are followed by a heap trim.
TRIM_AFTER_PIXELS = 1_000_000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the symbols already loaded in this process; None without glibc."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory_after_large_images(pixels: int) -> bool:
    """After decoding an image of ``pixels``, trim the heap if the image was large; True if memory went back."""
    if pixels < TRIM_AFTER_PIXELS:
        return False
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))
