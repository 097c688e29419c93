"""A thread budget for CPU work on a shared machine: use the cores other processes leave idle.

On a small machine where another process keeps a core busy, more intra-op threads than idle cores
make every parallel region wait for a descheduled thread, so a run gets many times slower instead
of faster (torch and OpenBLAS alike). :func:`thread_budget` caps torch and BLAS at the idle cores,
measured now (``/proc/stat`` over half a second) rather than by the 1-minute load average, which
still counts a job that ended seconds ago. Measurements: docs/results.md.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

import torch

__all__ = ["busy_between", "busy_cores", "cpu_times", "cpus", "free_threads", "load_average", "thread_budget"]


def cpus() -> int | None:
    """The cores this process may use (containers, taskset), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, where the platform has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_times(stat_path: str = "/proc/stat") -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from the kernel's counters, or None where there are none."""
    try:
        with open(stat_path) as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return idle, sum(values[:8])  # guest times are already inside user/nice


def busy_between(before: tuple[int, int], after: tuple[int, int], n_cpus: int) -> float:
    """Cores kept busy between two :func:`cpu_times` readings (0 .. n_cpus)."""
    d_total = after[1] - before[1]
    if d_total <= 0:
        return 0.0
    return n_cpus * max(0.0, 1.0 - (after[0] - before[0]) / d_total)


def busy_cores(interval: float = 0.5) -> float | None:
    """How many cores other processes keep busy *now*, sampled over ``interval`` seconds.

    This process sleeps while sampling, so what is counted is the others.
    """
    before = cpu_times()
    if before is None:
        return None
    time.sleep(interval)
    after = cpu_times()
    n = os.cpu_count()
    return None if after is None or not n else round(busy_between(before, after, n), 2)


def free_threads(default: int, n_cpus: int | None, load: float | None) -> int:
    """The default thread count, but no more than the cores other processes leave idle (>= 1)."""
    if not n_cpus or load is None:
        return max(1, default)
    return max(1, min(default, int(n_cpus - load + 0.5)))


@contextlib.contextmanager
def thread_budget() -> Iterator[dict[str, Any]]:
    """Run torch (and numpy's BLAS, via threadpoolctl when present) on :func:`free_threads` threads.

    The cores other processes keep busy are sampled once at the start (:func:`busy_cores`; the load
    average only where the kernel's counters cannot be read). Yields what was decided, for reports;
    the previous torch thread count is restored on exit.
    """
    load = load_average()
    busy = busy_cores()
    before = torch.get_num_threads()
    threads = free_threads(before, cpus(), busy if busy is not None else (load[0] if load else None))
    info: dict[str, Any] = {"threads": threads, "default_threads": before, "blas_threads": None,
                            "busy_cores_start": busy, "load_average_start": load}
    with contextlib.ExitStack() as stack:
        try:  # the baselines' eigendecompositions suffer the same oversubscription
            from threadpoolctl import threadpool_limits  # ships with scikit-learn (the demo extra)
        except ImportError:
            pass
        else:
            stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
            info["blas_threads"] = threads
        torch.set_num_threads(threads)
        stack.callback(torch.set_num_threads, before)
        yield info
