"""The thread budget: idle cores from the kernel's counters, caps on torch and BLAS, restored after."""

from __future__ import annotations

import os

import pytest
import torch

from bitseek.utils import threads
from bitseek.utils.threads import busy_between, busy_cores, cpu_times, free_threads


@pytest.mark.parametrize("default,cpus,load,expected", [
    (2, 2, 0.1, 2),   # idle: keep torch's default
    (2, 2, 1.2, 1),   # another process holds a core
    (2, 2, 5.0, 1),   # never below one thread
    (4, 8, 1.0, 4),   # never above the default
    (2, None, 0.0, 2),  # unknown CPU count or load: default
    (2, 2, None, 2),
])
def test_free_threads(default: int, cpus: int | None, load: float | None, expected: int) -> None:
    assert free_threads(default, cpus, load) == expected


def test_busy_cores_from_kernel_counters(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
    assert cpu_times(str(stat)) == (850, 1000)  # idle + iowait, and the first eight fields
    assert busy_between((850, 1000), (1350, 2000), 2) == pytest.approx(1.0)  # half of 2 cores busy
    assert busy_between((850, 1000), (1850, 2000), 2) == 0.0
    assert busy_between((850, 1000), (850, 1000), 2) == 0.0  # no time passed
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(str(stat)) is None and cpu_times(str(tmp_path / "missing")) is None
    now = busy_cores(0.05)
    assert now is None or 0.0 <= now <= (os.cpu_count() or 1)




def test_budget_caps_torch_at_idle_cores_and_restores(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.5: 1.0)  # another job holds a core
    monkeypatch.setattr(threads, "cpus", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.thread_budget() as info:
            assert torch.get_num_threads() == 1 == info["threads"]
            assert info["default_threads"] == 2 and info["busy_cores_start"] == 1.0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_old_import_path_still_works():
    from bitseek.demo import common

    assert common.thread_budget is threads.thread_budget and common.free_threads is free_threads
