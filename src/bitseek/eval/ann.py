"""Quality of approximate search against exact search: k-NN recall (by ids and tie-aware by
distance) and range-search precision/recall.

Ties matter with Hamming codes: the k-th distance of a 64-bit code is shared by many items, so an
approximate engine can return a *different* but equally close item. ``knn_recall`` (share of the
exact ids found) then under-counts; ``distance_recall`` counts a returned item as correct when its
distance is within the exact k-th distance, which is the measure to state a recall target in. It
trusts the returned distances, so check those separately (the contract tests recompute them).
Results follow the index layer: ``(distances, ids)`` rows padded with id -1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bitseek._array import as_numpy
from bitseek.errors import InputError

__all__ = ["knn_recall", "distance_recall", "range_precision_recall"]


def _pair(d: Any, i: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    d, i = as_numpy(d), as_numpy(i)
    if d.ndim != 2 or d.shape != i.shape:
        raise InputError(f"{name}: distances and ids must be 2-D of one shape, got {d.shape} and {i.shape}")
    return d, i


def knn_recall(ids: Any, true_ids: Any) -> float:
    """Share of the exact top-k ids (ignoring padding) that the approximate search returned."""
    ids, true_ids = as_numpy(ids), as_numpy(true_ids)
    if ids.ndim != 2 or true_ids.ndim != 2 or ids.shape[0] != true_ids.shape[0]:
        raise InputError(f"knn_recall(): ids {ids.shape} and true_ids {true_ids.shape} must be (nq, k) with one nq")
    found = total = 0
    for got, want in zip(ids, true_ids):
        want = want[want >= 0]
        found += np.intersect1d(got[got >= 0], want).size
        total += want.size
    return float(found / total) if total else 1.0


def distance_recall(distances: Any, ids: Any, true_distances: Any, true_ids: Any, metric: str = "hamming") -> float:
    """Tie-aware k-NN recall: share of the exact result's places filled with an item at least as
    close as the exact k-th one (Hamming: distance <= k-th; inner product: score >= k-th)."""
    d, i = _pair(distances, ids, "distance_recall() result")
    td, ti = _pair(true_distances, true_ids, "distance_recall() truth")
    if d.shape[0] != td.shape[0]:
        raise InputError(f"distance_recall(): {d.shape[0]} result rows for {td.shape[0]} exact rows")
    if metric not in ("hamming", "ip"):
        raise InputError(f"distance_recall(): metric must be 'hamming' or 'ip', got {metric!r}")
    good = total = 0
    for dr, ir, tdr, tir in zip(d, i, td, ti):
        valid = tir >= 0
        n = int(valid.sum())
        if n == 0:
            continue
        kth = tdr[valid][-1]
        ok = (ir >= 0) & ((dr <= kth) if metric == "hamming" else (dr >= kth))
        good += min(int(ok.sum()), n)
        total += n
    return float(good / total) if total else 1.0


def range_precision_recall(result: Any, truth: Any) -> tuple[float, float]:
    """(precision, recall) of a range search against the exact one, over all queries' (query, id) pairs.

    ``result`` and ``truth`` are :class:`bitseek.index.RangeResult`-like (``lims`` and ``ids``).
    """
    def pairs(r: Any) -> set[tuple[int, int]]:
        lims, ids = as_numpy(r.lims), as_numpy(r.ids)
        return {(q, int(x)) for q in range(len(lims) - 1) for x in ids[lims[q] : lims[q + 1]]}

    got, want = pairs(result), pairs(truth)
    hit = len(got & want)
    return (hit / len(got) if got else 1.0), (hit / len(want) if want else 1.0)
