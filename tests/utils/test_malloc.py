"""retain_freed_memory: glibc thresholds set once, a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from bitseek.utils import malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_thresholds_are_set_on_glibc(monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    real = malloc._glibc_mallopt()
    assert real is not None
    monkeypatch.setattr(malloc, "_glibc_mallopt", lambda: lambda key, value: calls.append((key, value)) or real(key, value))
    malloc.retain_freed_memory.cache_clear()
    assert malloc.retain_freed_memory(1 << 28) is True
    assert sorted(calls) == [(-3, 1 << 28), (-1, 1 << 28)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert malloc.retain_freed_memory(1 << 28) is True and len(calls) == 2  # once per process
    malloc.retain_freed_memory.cache_clear()


def test_another_c_library_is_left_alone(monkeypatch) -> None:
    monkeypatch.setattr(malloc, "_glibc_mallopt", lambda: None)
    malloc.retain_freed_memory.cache_clear()
    assert malloc.retain_freed_memory() is False
    malloc.retain_freed_memory.cache_clear()
