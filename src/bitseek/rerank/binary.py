"""The binary first stage: ITQ codes -> Hamming shortlist -> float re-scoring -> (CVNet) re-rank.

The two halves of bitseek meet here. A database keeps, per image, a ``bits/8``-byte ITQ code in the
search index (RAM), its float global descriptor on disk (read only for shortlisted images) and,
for CVNet, its convolved re-rank pyramid (or stage-3 map) in the re-rank cache. A query:

1. is ITQ-encoded and searched by Hamming distance (``bitseek.index``, exact ``flat`` by default),
   keeping the top ``shortlist`` (L) images;
2. the L candidates are re-scored by the float inner product and sorted by it;
3. the top K of that order go to the re-ranker (:func:`bitseek.rerank.fusion.rerank_ranks`).

:func:`binary_stage_cost` measures what step 1 costs in mAP against exact float search at the same
depth L, with and without the re-ranker after it, and the bytes each image costs at each stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitseek._array import as_numpy
from bitseek.codes import pack
from bitseek.errors import ConfigError, InputError
from bitseek.eval.revisited import PROTOCOLS, evaluate
from bitseek.rerank.base import Reranker
from bitseek.rerank.fusion import rerank_ranks
from bitseek.rerank.shortlist import DEFAULT_K

__all__ = ["BinaryFirstStage", "binary_first_stage", "binary_stage_cost", "exact_ranking", "first_stage_summary",
           "map_bytes"]


def _rows(x: Any, name: str) -> np.ndarray:
    a = as_numpy(x, name)
    if a.ndim != 2 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name}: expected a non-empty 2-D float (n, dim) array, got {a.dtype} {a.shape}")
    return a


@dataclass(eq=False)
class BinaryFirstStage:
    """The float-re-scored Hamming shortlist: rank-aligned ``ranks``/``scores`` of shape (L, n_query)."""

    ranks: np.ndarray
    scores: np.ndarray
    hamming: np.ndarray  # (L, n_query) Hamming distances in the first-stage order (before re-scoring)
    bits: int
    shortlist: int
    seconds: dict[str, float]

    @property
    def code_bytes(self) -> int:
        return self.bits // 8


def binary_first_stage(query_global: Any, db_global: Any, *, bits: int = 256, shortlist: int = 1000,
                       train: Any = None, index: str = "flat", seed: int = 0, iterations: int = 50,
                       hash_model: Any = None) -> BinaryFirstStage:
    """ITQ (fitted on ``train``, default the database itself) -> Hamming top-L -> float re-scoring.

    ``hash_model``: an already fitted ITQ (or any shallow hash with ``encode``) to use instead."""
    from bitseek.index import make_index
    from bitseek.registry import MODELS

    q = _rows(query_global, "query_global")
    x = _rows(db_global, "db_global")
    if q.shape[1] != x.shape[1]:
        raise InputError(f"query_global is {q.shape[1]}-d, db_global {x.shape[1]}-d")
    if isinstance(shortlist, bool) or int(shortlist) < 1:
        raise ConfigError(f"binary first stage: shortlist must be a positive integer, got {shortlist!r}")
    L = min(int(shortlist), x.shape[0])
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    if hash_model is None:
        hash_model = MODELS.create(MODELS.config("itq", bits=int(bits), seed=seed, iterations=iterations))
        hash_model.fit(np.asarray(x if train is None else _rows(train, "train"), dtype=np.float32))
    t["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    db_codes = pack(hash_model.encode(np.asarray(x, dtype=np.float32)))
    n_bits = db_codes.shape[1] * 8
    idx = make_index(index, bits=n_bits)
    if not idx.is_trained:
        idx.train(db_codes)
    idx.add(db_codes, np.arange(x.shape[0], dtype=np.int64))
    t["index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist, ids = idx.search(pack(hash_model.encode(np.asarray(q, dtype=np.float32))), L)
    t["hamming_search"] = time.perf_counter() - t0
    if (ids < 0).any():
        raise RuntimeError(f"Hamming search returned fewer than {L} hits from a flat database of {x.shape[0]}")
    t0 = time.perf_counter()
    ranks = np.empty((L, q.shape[0]), dtype=np.int64)
    scores = np.empty((L, q.shape[0]), dtype=np.float64)
    qf = np.asarray(q, dtype=np.float64)
    for i in range(q.shape[0]):
        cand = ids[i]
        s = np.asarray(x[cand], dtype=np.float64) @ qf[i]  # only the shortlisted rows are read
        order = np.argsort(-s, kind="stable")  # ties keep Hamming order
        ranks[:, i] = cand[order]
        scores[:, i] = s[order]
    t["float_rescoring"] = time.perf_counter() - t0
    return BinaryFirstStage(ranks=ranks, scores=scores, hamming=dist.T.astype(np.int64), bits=n_bits,
                            shortlist=L, seconds=t)


def exact_ranking(query_global: Any, db_global: Any, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact float inner-product ranking: rank-aligned ``(ranks, scores)`` of shape (depth or n_db, n_query)."""
    q = np.asarray(_rows(query_global, "query_global"), dtype=np.float64)
    x = np.asarray(_rows(db_global, "db_global"), dtype=np.float64)
    sim = x @ q.T
    ranks = np.argsort(-sim, axis=0, kind="stable")
    if depth is not None:
        ranks = ranks[: int(depth)]
    return ranks, np.take_along_axis(sim, ranks, axis=0)


def map_bytes(maps: Any, sample: int = 64) -> float:
    """Mean stored bytes per database map, from up to ``sample`` evenly spaced maps (a 1M-image cache
    is not read whole for a statistic); a number is taken as the answer."""
    if isinstance(maps, (int, float)):
        return float(maps)
    n = len(maps)
    rows = np.unique(np.linspace(0, n - 1, num=min(n, sample)).round().astype(np.int64)) if n else []
    sizes = []
    for i in rows:
        m = maps[int(i)]
        parts = m.levels if hasattr(m, "levels") else (m,)  # a cached re-rank Pyramid: its levels
        sizes.append(sum(t.numel() * t.element_size() if hasattr(t, "element_size") else np.asarray(t).nbytes
                         for t in parts))
    return float(np.mean(sizes)) if sizes else 0.0


def _maps(results: dict[str, Any], protocols: Sequence[str]) -> dict[str, float]:
    return {p: results[p].map for p in protocols}


def first_stage_summary(stage: BinaryFirstStage, full_ranks: np.ndarray, db_global: Any, gnd: Any, *,
                        k: int = DEFAULT_K, protocols: Sequence[str] = PROTOCOLS) -> dict[str, Any]:
    """What a binary first stage costs against exact float search (``full_ranks``, the whole ranking).

    JSON-ready: ``map`` of ``float_full``, ``float_top_L`` (exact float search cut at the same depth
    L) and ``binary_top_L``, percent as revisitop prints; ``cost`` in mAP points, ``vs_float_full``
    (what the user loses against the float global search) and ``first_stage`` (against float at depth
    L: the Hamming search's own error); ``recall_at_k``, the share of the exact top-K the Hamming top-L
    kept; ``bytes_per_image``; the stage's timings."""
    L = stage.shortlist
    x = as_numpy(db_global, "db_global")
    kk = min(int(k), L)
    n_q = stage.ranks.shape[1]
    recall = float(np.mean([np.isin(full_ranks[:kk, i], stage.ranks[:, i]).mean() for i in range(n_q)]))
    maps = {
        "float_full": _maps(evaluate(full_ranks, gnd, protocols), protocols),
        "float_top_L": _maps(evaluate(full_ranks[:L], gnd, protocols), protocols),
        "binary_top_L": _maps(evaluate(stage.ranks, gnd, protocols), protocols),
    }
    return {
        "bits": stage.bits, "shortlist_L": L, "n_db": int(x.shape[0]), "n_query": int(n_q),
        "recall_at_k": {"k": kk, "recall": recall},
        "bytes_per_image": {"binary_code": stage.code_bytes, "float_descriptor": int(x.shape[1] * x.dtype.itemsize)},
        "seconds": dict(stage.seconds),
        "map": maps,
        "cost": {"first_stage": _cost(maps["float_top_L"], maps["binary_top_L"]),
                 "vs_float_full": _cost(maps["float_full"], maps["binary_top_L"])},
    }


def _cost(ref: dict[str, float], got: dict[str, float]) -> dict[str, float]:
    return {p: round(ref[p] - got[p], 2) for p in ref}


def binary_stage_cost(query_global: Any, db_global: Any, gnd: Any, *, bits: int = 256, shortlist: int = 1000,
                      reranker: Reranker | None = None, k: int = DEFAULT_K, mode: str = "plain",
                      protocols: Sequence[str] = PROTOCOLS, db_maps: Any = None, seed: int = 0,
                      train: Any = None) -> dict[str, Any]:
    """mAP of exact float search vs the binary first stage (same depth L), before and after re-ranking.

    Returns :func:`first_stage_summary`'s report; with a ``reranker``, ``map`` also holds
    ``float_top_L+rerank`` / ``binary_top_L+rerank`` and ``cost`` an ``after_rerank`` entry. ``mode``
    is the re-rank shortlist mode (``"plain"`` or ``"gnd"``), recorded in the report. ``db_maps`` (a
    map source or a byte count) adds the re-rank cache's bytes per image."""
    stage = binary_first_stage(query_global, db_global, bits=bits, shortlist=shortlist, seed=seed, train=train)
    L = stage.shortlist
    full_ranks, full_scores = exact_ranking(query_global, db_global)
    f_ranks, f_scores = full_ranks[:L], full_scores[:L]
    report = first_stage_summary(stage, full_ranks, db_global, gnd, k=k, protocols=protocols)
    maps = report["map"]
    if db_maps is not None:
        report["bytes_per_image"]["rerank_map"] = map_bytes(db_maps)
    if reranker is not None:
        kk = report["recall_at_k"]["k"]
        fr = rerank_ranks(f_ranks, f_scores, reranker, mode=mode, k=kk, gnd=gnd, protocols=protocols)
        br = rerank_ranks(stage.ranks, stage.scores, reranker, mode=mode, k=kk, gnd=gnd, protocols=protocols)
        maps["float_top_L+rerank"] = _maps(evaluate(fr.ranks, gnd, protocols), protocols)
        maps["binary_top_L+rerank"] = _maps(evaluate(br.ranks, gnd, protocols), protocols)
        report["rerank"] = br.to_json()
        report["seconds"]["rerank_binary"] = br.seconds
        report["cost"]["after_rerank"] = _cost(maps["float_top_L+rerank"], maps["binary_top_L+rerank"])
    return report
