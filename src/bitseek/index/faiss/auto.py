"""``auto``: an index that picks its engine and search parameters for a target recall.

Why: the right engine and ``nprobe`` depend on the codes (clustered learned codes need far fewer
probes than random ones) and on the collection's size, so a fixed default is either slow or
inaccurate. ``make_index("auto", bits=64, target_recall=0.99)`` defers the choice to ``train``:

1. a held-out sample of the training codes (``min(1000, max(100, n/20))`` of them) becomes the
   queries; up to ``tune_size`` of the others are searched;
2. exact answers and the exact scan's speed come from a flat scan of that sample;
3. below ``SMALL`` codes the exact ``flat`` engine is chosen outright (nothing beats a scan
   there); otherwise an ``ivf{nlist}`` index (nlist ≈ 4·√n, a power of two, ≥ 39 training codes
   a list) is trained and its ``nprobe`` swept upwards, measuring tie-aware distance recall at
   ``k`` (``bitseek.eval.ann.distance_recall``) and speed against the flat scan;
4. the smallest ``nprobe`` that reaches the target while beating the scan wins (beating it is
   taken as given when at most 1/8 of the lists are probed, so that timing noise on a busy machine
   does not flip the choice); if none does, ``flat`` (exact) wins.

The measured recall, speed, the whole recall/``nprobe`` curve and the sample sizes are kept in
``index.tuning`` and in the saved file; loading checks them against the engine the file holds.
``search(q, k, recall=0.95)`` picks, for that call only, the smallest measured ``nprobe`` whose
recall reached 0.95 (all lists, i.e. an exact answer, for a recall above every measured one).

The tuning sample is smaller than a large collection: with the same lists, more codes put a
query's true neighbours closer and in fewer lists, so recall measured on the sample is a
conservative estimate for the full index (``benchmarks/bench_ann.py`` measures it at 10M).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.api import IndexFileError, IndexNotTrainedError, RangeResult, SearchIndex, check_k, engine_class
from bitseek.index.faiss.base import FaissIndex
from bitseek.index.faiss.binary import BinaryFlatIndex
from bitseek.index.faiss.ivf import BinaryIVFIndex
from bitseek.index.persist import write_index_file

__all__ = ["AutoIndex", "check_recall", "describe_tuning", "MIN_TUNE", "SMALL"]

MIN_TUNE = 500  # codes: 100 held-out queries and 400 to search
SMALL = 20_000  # below this many searched codes the exact scan is chosen without a sweep
_PROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)


def check_recall(value: Any, what: str) -> float:
    """A recall in (0, 1] (a target or a per-call request); anything else is a one-line error."""
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in (0, 1], got {value!r}") from None
    if isinstance(value, bool) or not (0.0 < r <= 1.0) or math.isnan(r):
        raise ConfigError(f"{what} must be in (0, 1] (e.g. 0.99), got {value!r}")
    return r


def _timed(fn: Any) -> tuple[float, Any]:
    """Best of two runs when a run is short (the first call pays for page faults and caches)."""
    t = time.perf_counter()
    out = fn()
    best = time.perf_counter() - t
    if best < 0.5:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return max(best, 1e-9), out


class AutoIndex(SearchIndex):
    """``auto[,target_recall=0.99][,k=100][,tune_size=1000000]``: engine chosen by ``train``."""

    engine = "auto"
    metric = "hamming"
    name_patterns: ClassVar[tuple[str, ...]] = (r"auto",)
    options_spec: ClassVar[dict[str, tuple[Any, Any]]] = {
        "target_recall": ("0.99", ""), "k": (100, 1), "tune_size": (1_000_000, MIN_TUNE)}

    def __init__(self, bits: int, params: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self._probe = BinaryFlatIndex(bits)  # input checks (packed or ±1 rows) and bits validation
        self.dim = self._probe.dim
        self.params: dict[str, Any] = {}
        opts = dict(options or {})
        unknown = set(opts) - set(self.options_spec)
        if unknown:
            raise ConfigError(f"auto index has no option {sorted(unknown)[0]!r} (valid: k, target_recall, tune_size)")
        self.target_recall = check_recall(opts.get("target_recall", "0.99"), "auto index: target_recall")
        self.k = check_k(opts.get("k", 100), "auto index option k")
        self.tune_size = int(opts.get("tune_size", 1_000_000))
        if self.tune_size < MIN_TUNE:
            raise ConfigError(f"auto index: tune_size must be >= {MIN_TUNE}, got {self.tune_size}")
        self._inner: FaissIndex | None = None
        self.tuning: dict[str, Any] | None = None

    # ------------------------------------------------------------------ description
    @property
    def spec(self) -> str:
        return f"auto,k={self.k},target_recall={self.target_recall:g},tune_size={self.tune_size}"

    @property
    def chosen(self) -> str | None:
        """The spec of the engine ``train`` picked (``None`` before training)."""
        return None if self._inner is None else self._inner.spec

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return bool(self._inner is not None and self._inner.exact)

    @property
    def search_params(self) -> dict[str, int]:  # type: ignore[override]
        return {} if self._inner is None else dict(self._inner.search_params)

    @property
    def is_trained(self) -> bool:
        return self._inner is not None

    def _need(self, what: str) -> FaissIndex:
        if self._inner is None:
            raise IndexNotTrainedError(
                f"{what}(): an auto index picks its engine when trained: call index.train(codes) first")
        return self._inner

    @property
    def ids(self) -> np.ndarray:
        return np.empty(0, np.int64) if self._inner is None else self._inner.ids

    def __len__(self) -> int:
        return 0 if self._inner is None else len(self._inner)

    def contains(self, ids: Any) -> np.ndarray:
        if self._inner is None:
            from bitseek.index.api import as_ids

            return np.zeros(as_ids(ids).size, bool)
        return self._inner.contains(ids)

    def metadata(self, ids: Any) -> dict[str, list[Any]]:
        return {} if self._inner is None else self._inner.metadata(ids)

    def __repr__(self) -> str:
        return f"<AutoIndex {self.spec!r} chose {self.chosen!r} n={len(self)}>"

    # ------------------------------------------------------------------ tuning
    def train(self, codes: Any) -> None:
        """Pick the engine and its parameters on a held-out sample of ``codes`` (module docstring)."""
        x = self._probe._coerce(codes, "training codes")
        if self._inner is not None and len(self._inner):
            raise InputError(f"train(): the auto index already holds {len(self._inner)} codes; build a new index to retune")
        n = x.shape[0]
        if n < MIN_TUNE:
            raise InputError(
                f"train(): {n} codes are too few to tune an auto index: need at least {MIN_TUNE} (100 held-out "
                f"queries plus codes to search); train on more codes, or use a fixed spec such as 'flat'")
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        perm = rng.permutation(n)
        nq = min(1000, max(100, n // 20))
        queries = np.ascontiguousarray(x[np.sort(perm[:nq])])
        base = np.ascontiguousarray(x[np.sort(perm[nq : nq + self.tune_size])])
        k = min(self.k, base.shape[0])
        flat = faiss.IndexBinaryFlat(self.dim)
        flat.add(base)
        flat_s, truth = _timed(lambda: flat.search(queries, k))
        record: dict[str, Any] = {
            "target_recall": self.target_recall, "k": k, "train_codes": n, "tune_queries": nq,
            "tune_codes": int(base.shape[0]), "flat_qps": round(nq / flat_s, 1), "curve": []}
        chosen: FaissIndex | None = None
        if base.shape[0] >= SMALL:
            rest = x if nq == 0 else x[np.sort(perm[nq:])]  # the quantiser never sees the held-out queries
            chosen = self._tune_ivf(rest, base, queries, truth, flat_s, record, rng)
        if chosen is None:
            chosen = BinaryFlatIndex(self.dim)
            record.update(engine="flat", recall=1.0, recall_at_10=1.0, qps=record["flat_qps"], speedup=1.0,
                          reason="exact scan" + (" (small sample)" if base.shape[0] < SMALL else
                                                 ": no nprobe reached the target faster than the scan"))
        record["chosen"] = chosen.spec
        record["seconds"] = round(time.perf_counter() - t0, 2)
        self._inner, self.tuning = chosen, record

    def _tune_ivf(self, x: np.ndarray, base: np.ndarray, queries: np.ndarray, truth: tuple[np.ndarray, np.ndarray],
                  flat_s: float, record: dict[str, Any], rng: np.random.Generator) -> FaissIndex | None:
        from bitseek.eval.ann import distance_recall

        n = x.shape[0] + queries.shape[0]  # lists sized for every training code
        nlist = max(1, min(2 ** round(math.log2(4 * math.sqrt(n))), x.shape[0] // 39))
        ivf = BinaryIVFIndex(self.dim, {"nlist": nlist})
        sample = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        ivf.train(sample)
        probe = faiss.clone_binary_index(ivf._faiss)
        probe.add(base)
        td, ti = truth
        k = td.shape[1]
        best = None
        for nprobe in [p for p in _PROBES if p < nlist] + [nlist]:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            sec, (d, i) = _timed(lambda: probe.search(queries, k, params=params))
            point = {"nprobe": nprobe, "recall": round(distance_recall(d, i, td, ti), 5),
                     "recall_at_10": round(distance_recall(d[:, :10], i[:, :10], td[:, :10], ti[:, :10]), 5),
                     "qps": round(len(queries) / sec, 1), "speedup": round(flat_s / sec, 2)}
            record["curve"].append(point)
            # faster than the scan: measured, or certain because at most 1/8 of the lists are read
            # (timings on a busy machine are noisy; the choice should not be)
            if best is None and point["recall"] >= self.target_recall and (point["speedup"] > 1 or 8 * nprobe <= nlist):
                best = point
            if point["recall"] >= max(self.target_recall, 0.999) or sec > flat_s:
                break  # the curve has passed the target (or the scan's cost): more probes only cost
        record["nlist"] = nlist
        if best is None:
            return None
        ivf.set_options(nprobe=int(best["nprobe"]))
        record.update(engine="ivf", recall=best["recall"], recall_at_10=best["recall_at_10"], qps=best["qps"],
                      speedup=best["speedup"], reason="fastest nprobe reaching the target")
        return ivf

    def nprobe_for(self, recall: float) -> int | None:
        """The smallest measured ``nprobe`` whose recall reached ``recall`` (all lists above the curve)."""
        inner = self._need("search")
        if not isinstance(inner, BinaryIVFIndex):
            return None  # exact: every recall is met
        assert self.tuning is not None
        for point in self.tuning["curve"]:
            if point["recall"] >= recall:
                return int(point["nprobe"])
        return inner.nlist

    # ------------------------------------------------------------------ delegated reads and writes
    def add(self, data: Any, ids: Any | None = None, meta: Mapping[str, list[Any]] | None = None) -> np.ndarray:
        return self._need("add").add(data, ids, meta)

    def remove(self, ids: Any, missing: str = "error") -> int:
        return self._need("remove").remove(ids, missing)

    def compact(self) -> None:
        if self._inner is not None:
            self._inner.compact()

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        recall = params.pop("recall", None)
        if recall is not None:
            if params.get("nprobe") is not None:
                raise ConfigError("search(): give recall= or nprobe=, not both")
            nprobe = self.nprobe_for(check_recall(recall, "search(): recall"))
            if nprobe is not None:
                params["nprobe"] = nprobe
        return params

    def search(self, queries: Any, k: int, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k``; ``recall=`` picks this call's ``nprobe`` from the measured curve."""
        inner = self._need("search")
        return inner.search(queries, k, **self._params(dict(params)))

    def range_search(self, queries: Any, radius: Any, **params: Any) -> RangeResult:
        inner = self._need("range_search")
        return inner.range_search(queries, radius, **self._params(dict(params)))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """The chosen engine's file, with ``engine: auto``, the auto options and the tuning record."""
        inner = self._need("save")
        with inner._lock.read():
            header, sections = inner._file_parts()
        header.update(engine="auto", spec=self.spec, inner_engine=inner.engine, inner_spec=inner.spec,
                      auto={"k": self.k, "target_recall": self.target_recall, "tune_size": self.tune_size},
                      tuning=self.tuning)
        write_index_file(path, header, sections)

    @classmethod
    def _from_file(cls, path: Path, header: dict[str, Any], sections: dict[str, np.ndarray]) -> "AutoIndex":
        return cls._assemble(path, header, lambda h: engine_class(h["engine"])._from_file(path, h, sections))

    @classmethod
    def _assemble(cls, path: Path, header: dict[str, Any], open_inner: Callable[[dict[str, Any]], Any]) -> "AutoIndex":
        """The auto index of a file whose inner engine ``open_inner(inner header)`` opens (loaded or mapped),
        its tuning record checked against what the file holds."""
        try:
            inner_engine, inner_spec = str(header["inner_engine"]), str(header["inner_spec"])
            tuning, auto = dict(header["tuning"]), dict(header["auto"])
            obj = cls(int(header["dim"]), None, {"k": int(auto["k"]), "target_recall": auto["target_recall"],
                                                 "tune_size": int(auto["tune_size"])})
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise IndexFileError(f"{path}: corrupt auto index header ({type(e).__name__}: {e})") from None
        if inner_engine not in ("flat", "ivf"):
            raise IndexFileError(f"{path}: an auto index holds a flat or ivf engine, the header says {inner_engine!r}")
        inner = open_inner({**header, "engine": inner_engine, "spec": inner_spec})
        assert isinstance(inner, FaissIndex)
        problems = []
        if inner.spec != inner_spec:
            problems.append(f"header says {inner_spec}, the file holds {inner.spec}")
        if tuning.get("chosen") != inner.spec:
            problems.append(f"the tuning record says {tuning.get('chosen')!r}, the file holds {inner.spec!r}")
        if isinstance(inner, BinaryIVFIndex) and tuning.get("nlist") != inner.nlist:
            problems.append(f"the tuning record was measured with nlist={tuning.get('nlist')}, the file holds {inner.nlist}")
        curve = tuning.get("curve") or []
        if isinstance(inner, BinaryIVFIndex) and not any(p.get("nprobe") == inner.options["nprobe"] for p in curve):
            problems.append(f"nprobe={inner.options['nprobe']} is not on the recorded recall curve")
        if problems:
            raise IndexFileError(f"{path}: recorded tuning does not match the index ({'; '.join(problems)}); "
                                 "rebuild it with `bitseek index --spec auto`")
        obj._inner, obj.tuning = inner, tuning
        return obj


def describe_tuning(tuning: Mapping[str, Any]) -> str:
    """One line for people: what was chosen and what was measured."""
    return (f"auto chose {tuning['chosen']}: recall@{tuning['k']} {tuning['recall']:.4f} (target "
            f"{tuning['target_recall']:g}), {tuning['qps']:,.0f} queries/s = {tuning['speedup']:.1f}x the exact scan, "
            f"measured on {tuning['tune_queries']} held-out of {tuning['train_codes']:,} training codes "
            f"against {tuning['tune_codes']:,}")
