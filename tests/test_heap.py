"""faceattr/serve/heap.py: the glibc heap trim after large decodes."""

from __future__ import annotations

import platform

from faceattr.serve import heap
from faceattr.serve.heap import TRIM_AFTER_PIXELS, return_freed_memory_after_large_images


def test_only_large_images_are_followed_by_a_trim(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    assert not return_freed_memory_after_large_images(TRIM_AFTER_PIXELS - 1) and calls == []
    assert return_freed_memory_after_large_images(TRIM_AFTER_PIXELS) and calls == [0]
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)  # no glibc: nothing to call
    assert not return_freed_memory_after_large_images(10 * TRIM_AFTER_PIXELS)


def test_malloc_trim_is_found_exactly_on_glibc():
    assert (heap._malloc_trim() is not None) == (platform.libc_ver()[0] == "glibc")
    return_freed_memory_after_large_images(TRIM_AFTER_PIXELS)  # the real call: returns, whatever it freed
