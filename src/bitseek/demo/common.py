"""What the video and image demos share: configs, running methods, searching, writing the report."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import time
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from bitseek import pipeline
from bitseek.config import ExperimentConfig, load_config
from bitseek.data.base import RetrievalData
from bitseek.errors import ConfigError


def config_path(name: str) -> Path:
    """A YAML file shipped in ``bitseek/demo/configs``."""
    return Path(str(resources.files("bitseek.demo") / "configs" / name))


def console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not available on every platform
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

    The 1-minute load average lags by about a minute: right after another job ends it still reads
    ~1 on an idle 2-core machine, and the demo would then run on one thread for nothing (measured:
    305 s instead of 271 s). This process sleeps while sampling, so what is counted is the others.
    """
    before = cpu_times()
    if before is None:
        return None
    time.sleep(interval)
    after = cpu_times()
    n = os.cpu_count()
    return None if after is None or not n else round(busy_between(before, after, n), 2)


def free_threads(default: int, n_cpus: int | None, load: float | None) -> int:
    """Threads for a demo: the default, but no more than the cores other processes leave idle.

    On a 2-core machine where another process keeps one core busy, two intra-op threads made a
    CSCE-Net training step 18x slower than one thread (0.27 s -> 4.9 s: each parallel region waits
    for the descheduled thread), while on an idle machine the second thread only gives ~1.6x.
    OpenBLAS behaves alike: a 1,024-d ``eigh`` took 0.4 s on one thread and up to 10 s on two.
    """
    if not n_cpus or load is None:
        return max(1, default)
    return max(1, min(default, int(n_cpus - load + 0.5)))


@contextlib.contextmanager
def thread_budget() -> Iterator[dict[str, Any]]:
    """Run torch (and numpy's BLAS, via threadpoolctl when present) on :func:`free_threads` threads,
    given the cores other processes keep busy at the start (:func:`busy_cores`)."""
    load = load_average()
    busy = busy_cores()  # the load average only where the kernel's counters are not readable
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


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "machine": platform.machine()}


def shallow_config(method: str, bits: int, dataset: str, out: Path, data: dict[str, Any], seed: int,
                   eval_cfg: dict[str, Any] | None = None) -> ExperimentConfig:
    """Config of a shallow baseline run (fit on the training split's features)."""
    return load_config(raw={
        "name": f"{method}-{dataset}-{bits}",
        "model": {"name": method, "bits": bits, "seed": seed},
        "data": {"name": dataset, **data},
        "train": {"seed": seed, "out_dir": str(out / "runs" / f"{method}-{bits}"), "progress": False},
        "eval": eval_cfg or {},
    })


def deep_config(yaml_name: str, method: str, bits: int, dataset: str, out: Path, overrides: Sequence[str],
                seed: int, epochs_scale: int = 1) -> ExperimentConfig:
    """Config of a deep run from a shipped YAML, its epochs multiplied by ``epochs_scale``."""
    cfg = load_config(config_path(yaml_name), [
        f"model.bits={bits}", f"train.seed={seed}", f"train.out_dir={out / 'runs' / f'{method}-{bits}'}",
        f"name={method}-{dataset}-{bits}", *overrides])
    if epochs_scale < 1:
        raise ConfigError(f"the epoch scale must be a whole number >= 1, got {epochs_scale}")
    cfg.train.epochs *= epochs_scale
    return cfg


def epochs_scale(full: bool, train_scale: int | None) -> int:
    """How much longer than their presets the demos train: ``--train-scale``, else 3 for ``--full``."""
    return train_scale if train_scale is not None else (3 if full else 1)


class Runner:
    """Trains, encodes and evaluates methods on one dataset, collecting rows, codes and timings."""

    def __init__(self, data: RetrievalData, dataset: str, con: Any) -> None:
        self.data = data
        self.dataset = dataset
        self.con = con
        self.rows: list[dict[str, Any]] = []
        self.codes: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self.configs: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def run(self, cfg: ExperimentConfig, method: str, bits: int, headline: str) -> None:
        t0 = time.perf_counter()
        model, _ = pipeline.train(cfg, self.data)
        train_s = time.perf_counter() - t0
        q, db = pipeline.encode_splits(model, self.data, cfg)
        self.codes[(method, bits)] = (q, db)
        new = pipeline.evaluate_codes(q, db, self.data.query_labels, self.data.database_labels, cfg.eval,
                                      dataset=self.dataset, method=method, bits=bits)
        self.rows.extend(new)
        self.configs[f"{method}-{bits}"] = dataclasses.asdict(cfg)
        self.timings[f"{method}-{bits}_train_s"] = round(train_s, 3)
        value = next(r["value"] for r in new if r["metric"] == headline)
        self.con.print(f"  {method:>6} {bits:>2} bits: {headline} = {value:.4f}  (trained in {train_s:.1f}s)")

    def pr_curves(self, bits: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from bitseek import eval as E

        curves = {}
        for (method, b), (q, db) in self.codes.items():
            if b == bits:
                pr = E.precision_recall(q, db, self.data.query_labels, self.data.database_labels)
                curves[f"{method} {b} bits"] = (pr.precision, pr.recall)
        return curves


def search_top(q: np.ndarray, db: np.ndarray, k: int = 100, spec: str = "flat") -> tuple[np.ndarray, dict[str, Any]]:
    """Index database codes and search every query (top-k ids, timings)."""
    from bitseek.codes import pack
    from bitseek.index import make_index

    index = make_index(spec, bits=db.shape[1])
    t0 = time.perf_counter()
    index.add(pack(db), np.arange(len(db), dtype=np.int64))
    t1 = time.perf_counter()
    _, ids = index.search(pack(q), min(k, len(db)))
    t2 = time.perf_counter()
    return ids, {"index": spec, "k": int(ids.shape[1]), "index_add_ms": round((t1 - t0) * 1e3, 3),
                 "search_ms_total": round((t2 - t1) * 1e3, 3),
                 "search_ms_per_query": round((t2 - t1) * 1e3 / len(q), 4)}


def write_report(out: Path, title: str, intro: str, rows: list[dict[str, Any]], notes: Sequence[str],
                 images: Sequence[tuple[str, str]]) -> Path:
    """``report.md``: intro, the results table, notes, then the pictures."""
    from bitseek.atomic import atomic_write_text
    from bitseek.eval.report import markdown_table

    parts = [f"# {title}", "", intro, "", markdown_table(rows), ""]
    parts += [n for note in notes for n in (note, "")]
    parts += [p for alt, file in images for p in (f"![{alt}]({file})", "")]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path
