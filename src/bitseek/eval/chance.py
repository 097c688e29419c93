"""What a random ranking scores, and the label statistics that bound a benchmark's numbers.

A reported mAP means little without the level a uniformly random ranking reaches on the same
labels and the best any ranking could reach; both are exact here, not sampled.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bitseek.errors import InputError

__all__ = ["chance_map_at_k", "label_statistics"]


def chance_map_at_k(query_labels: np.ndarray, db_labels: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Expected divide-by-K mAP@K of a uniformly random ranking (exact, not sampled).

    For a query with m relevant among N database items, a random permutation gives
    E[rel_r] = m/N and E[rel_r·rel_i] = m(m-1)/(N(N-1)) for i ≠ r, hence
    E[AP@K] = (1/K) Σ_{r≤K} [m/N + (r-1)·m(m-1)/(N(N-1))] / r.
    """
    q = np.asarray(query_labels, dtype=np.float64)
    d = np.asarray(db_labels, dtype=np.float64)
    m = ((q @ d.T) > 0).sum(axis=1).astype(np.float64)
    n = float(d.shape[0])
    out: dict[int, float] = {}
    for k in ks:
        if not 1 <= k <= n:
            raise InputError(f"chance_map_at_k: K={k} must be between 1 and the database size {int(n)}")
        harmonic = float(np.sum(1.0 / np.arange(1, k + 1)))
        pair = m * (m - 1) / (n * (n - 1)) if n > 1 else np.zeros_like(m)
        ap = (m / n * harmonic + pair * (k - harmonic)) / k
        out[int(k)] = float(ap.mean())
    return out


def label_statistics(query_labels: np.ndarray, db_labels: np.ndarray,
                     ks: Sequence[int] = (5, 20, 100)) -> dict[str, Any]:
    """Class count and frequencies, relevant items per query, chance mAP@K and the @K ceiling."""
    q = np.asarray(query_labels, dtype=np.float64)
    d = np.asarray(db_labels, dtype=np.float64)
    rel = ((q @ d.T) > 0).sum(axis=1)
    return {
        "classes": int(q.shape[1]),
        "query_class_freq": (q > 0).mean(axis=0).round(4).tolist(),
        "db_class_freq": (d > 0).mean(axis=0).round(4).tolist(),
        "labels_per_query": float((q > 0).sum(axis=1).mean()),
        "relevant_per_query_mean": float(rel.mean()),
        "relevant_per_query_min": int(rel.min()),
        "relevant_fraction": float(rel.mean() / d.shape[0]),
        "chance_map": {str(k): v for k, v in chance_map_at_k(q, d, ks).items()},
        "ceiling_map": {str(k): float(np.minimum(1.0, rel / k).mean()) for k in ks},
    }

