"""What the video and image demos share: configs, running methods, searching, writing the report."""

from __future__ import annotations

import dataclasses
import platform
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bitseek import pipeline
from bitseek.config import ExperimentConfig, load_config
from bitseek.data.base import RetrievalData
from bitseek.errors import ConfigError
from bitseek.utils.threads import (busy_between, busy_cores, cpu_times, cpus, free_threads,  # noqa: F401 (old home)
                                   load_average, thread_budget)


def config_path(name: str) -> Path:
    """A YAML file shipped in ``bitseek/demo/configs``."""
    return Path(str(resources.files("bitseek.demo") / "configs" / name))


def console() -> Any:
    try:
        from rich.console import Console
    except ImportError:
        from bitseek.errors import BitseekError

        raise BitseekError("the demo needs its optional extra: pip install 'bitseek[demo]'") from None

    return Console(stderr=True)


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
        new = pipeline.evaluate_codes(q, db, self.data.query_labels, self.data.searched_labels, cfg.eval,
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
                pr = E.precision_recall(q, db, self.data.query_labels, self.data.searched_labels)
                curves[f"{method} {b} bits"] = (pr.precision, pr.recall)
        return curves


def search_top(q: np.ndarray, db: np.ndarray, k: int = 100,
               spec: str = "flat") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Index database codes and search every query: (Hamming distances, ids, timings), top-k each."""
    from bitseek.codes import pack
    from bitseek.index import make_index

    index = make_index(spec, bits=db.shape[1])
    t0 = time.perf_counter()
    index.add(pack(db), np.arange(len(db), dtype=np.int64))
    t1 = time.perf_counter()
    dist, ids = index.search(pack(q), min(k, len(db)))
    t2 = time.perf_counter()
    return np.asarray(dist), np.asarray(ids), {"index": spec, "k": int(ids.shape[1]), "index_add_ms": round((t1 - t0) * 1e3, 3),
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
