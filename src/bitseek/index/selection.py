"""Exact top-k selection with a deterministic tie rule, in vectorised numpy.

faiss's float heaps do not order equal scores by position (nor choose which tied items survive at
the k-th place), so the inner-product backend selects here: one ``np.partition`` finds the k-th best
score per row, every strictly better item is kept, and the remaining places go to the tied items in
ascending column (= insertion) order. Cost is O(n) per row plus a sort of k items.
"""

from __future__ import annotations

import numpy as np

__all__ = ["topk_largest", "rows_at_least"]


def topk_largest(scores: np.ndarray, k: int, pad: float = float("-inf")) -> tuple[np.ndarray, np.ndarray]:
    """Per row the ``k`` largest scores and their columns, largest first, ties by ascending column.

    Rows with fewer than ``k`` columns are padded with ``pad`` and column -1.
    """
    m, n = scores.shape
    kk = min(k, n)
    if kk == n or 4 * kk >= n:
        cols = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    else:
        kth = np.partition(scores, n - kk, axis=1)[:, n - kk, None]
        better = scores > kth
        tied = scores == kth
        room = kk - better.sum(axis=1, keepdims=True)
        keep = better | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= room))
        cols = np.nonzero(keep)[1].reshape(m, kk)  # exactly kk per row, ascending columns
        vals = np.take_along_axis(scores, cols, 1)
        cols = np.take_along_axis(cols, np.argsort(-vals, axis=1, kind="stable"), 1)
    vals = np.take_along_axis(scores, cols, 1)
    if kk == k:
        return vals, cols.astype(np.int64)
    out_v = np.full((m, k), pad, dtype=scores.dtype)
    out_c = np.full((m, k), -1, dtype=np.int64)
    out_v[:, :kk], out_c[:, :kk] = vals, cols
    return out_v, out_c


def rows_at_least(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries ``>= threshold`` as (row, column, score), row-major (columns ascending in a row)."""
    r, c = np.nonzero(scores >= threshold)
    return r.astype(np.int64), c.astype(np.int64), scores[r, c]
