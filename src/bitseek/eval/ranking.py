"""Exact top-k database indices per query, in query chunks, under two tie rules.

``ties="stable"``: order by (distance, database index). Binary codes (packed, or ±1 without
zeros) are selected by *counting*: Hamming distances are integers 0..bits, so one scan of the
database per query keeps, for each distance, the first k indices met at it (in index order) and
lowers the threshold distance whenever the items strictly below it already reach k; the answer is
the buckets below the final threshold plus the first items at it, which is exactly the
(distance, index) order. faiss's ``hammings_knn_mc`` is that scan in C (the distance loop fused
with the counting, no (r, n_db) matrix); it is used while its buckets (``(bits + 1)·k`` ids per
query) stay within a couple of rows of the database, i.e. for the usual k << n_db.

Otherwise (ternary codes with half-integer distances, or k near n_db as in mAP@all) the pair is
packed into one integer key ``key·n_db + index``, unique per row, so ``np.partition`` alone
selects the exact top-k and a sort of those k keys gives the final order. Cost per query: O(n_db)
selection + O(k log k).

``ties="numpy"``: the order of ``np.argsort`` (default kind) on the reference's distance column
``0.5·(bits − d·q)`` in the reference's dtype (float32 for ConMH/BTH/SSVH, whose codes are float32
arrays; DeepHash-pytorch's are float32 torch outputs). numpy's default sort is unstable and
its tie order depends on the whole column, so there is no shortcut: each query pays a full
O(n_db log n_db) sort. The order is that of the numpy build and CPU SIMD path it runs on, exactly
as the reference's was.

Memory stays at O(chunk·n_db): chunks are sized from ``chunk_size`` (query rows) or from an
element budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import faiss
import numpy as np

from bitseek.errors import InputError
from bitseek.eval.inputs import Codes

Ties = Literal["stable", "numpy"]

__all__ = ["Ties", "check_ties", "chunk_rows", "iter_topk", "DEFAULT_BUDGET"]

# Elements of one (chunk, n_db) matrix; a chunk holds ~3 such matrices of 4-8 bytes (~200 MB).
DEFAULT_BUDGET = 1 << 23


def check_ties(ties: str, numpy_dtype: str | np.dtype) -> np.dtype:
    """Validate the tie rule and the dtype the numpy rule sorts in."""
    if ties not in ("stable", "numpy"):
        raise InputError(f"ties must be 'stable' or 'numpy', got {ties!r}")
    try:
        dt = np.dtype(numpy_dtype)
    except TypeError:
        raise InputError(f"numpy_dtype must be 'float32' or 'float64', got {numpy_dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"numpy_dtype must be 'float32' or 'float64', got {numpy_dtype!r}")
    return dt


def chunk_rows(
    n_query: int, n_db: int, chunk_size: int | None, k: int = 0, budget: int = DEFAULT_BUDGET
) -> int:
    """Query rows per chunk: ``chunk_size`` if given, else as many as fit the element budget.

    A row costs ~``n_db`` elements for distances/keys plus ~``2k`` for the top-k indices and
    their relevance, which matters when k approaches the database size (mAP@all).
    """
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        return int(min(chunk_size, n_query))
    return int(max(1, min(n_query, budget // max(n_db + 2 * k, 1))))


def _topk_stable(codes: Codes, rows: slice, k: int) -> np.ndarray:
    n = codes.n_db
    key = codes.rank_key(rows)
    wide = (codes.key_max + 1) * n >= np.iinfo(np.int32).max
    key = key.astype(np.int64) if wide else key
    key *= n
    key += np.arange(n, dtype=key.dtype)  # unique per row: (distance, index) in one integer
    if k < n:
        key = np.partition(key, k - 1, axis=1)[:, :k]
    key.sort(axis=1)
    return np.remainder(key, n).astype(np.int64, copy=False)


def _counting_fits(codes: Codes, k: int) -> bool:
    """Counting top-k applies to binary codes whose (bits + 1)·k buckets stay near a database row."""
    hb = codes.hamming_bytes
    return hb is not None and (hb[0].shape[1] * 8 + 1) * k <= 2 * codes.n_db


def _counting_rows(codes: Codes, k: int, chunk_size: int | None, budget: int = DEFAULT_BUDGET) -> int:
    """Query rows per counting call: the buckets, not the database, are what a row costs."""
    if chunk_size is not None:
        return chunk_rows(codes.n_query, codes.n_db, chunk_size)
    per_row = (codes.hamming_bytes[0].shape[1] * 8 + 2) * k  # type: ignore[index]
    return int(max(1, min(codes.n_query, budget // per_row)))


def _topk_counting(codes: Codes, rows: slice, k: int) -> np.ndarray:
    """Exact (distance, index)-ordered top-k of binary codes by counting (faiss ``hammings_knn_mc``)."""
    qb, db = codes.hamming_bytes  # type: ignore[misc]
    q = np.ascontiguousarray(qb[rows])
    n = q.shape[0]
    dist = np.empty((n, k), dtype=np.int32)
    idx = np.empty((n, k), dtype=np.int64)
    faiss.hammings_knn_mc(faiss.swig_ptr(q), faiss.swig_ptr(db), n, codes.n_db, k, q.shape[1],
                          faiss.swig_ptr(dist), faiss.swig_ptr(idx))
    return idx


def _topk_numpy(codes: Codes, rows: slice, k: int, dtype: np.dtype) -> np.ndarray:
    dist = codes.distance(rows, dtype)
    order = np.argsort(dist, axis=1)  # default kind, contiguous rows = the reference's columns
    return order[:, :k] if k < codes.n_db else order


def iter_topk(
    codes: Codes,
    k: int,
    ties: Ties = "stable",
    *,
    numpy_dtype: str | np.dtype = "float32",
    chunk_size: int | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, idx)``: a slice of queries and their (r, k) int64 database indices, best first."""
    dtype = check_ties(ties, numpy_dtype)
    if not 1 <= k <= codes.n_db:
        raise InputError(f"k={k} must be between 1 and the database size {codes.n_db}")
    counting = ties == "stable" and _counting_fits(codes, k)
    if counting:
        step = _counting_rows(codes, k, chunk_size)
    else:
        step = chunk_rows(codes.n_query, codes.n_db, chunk_size, k)
    for start in range(0, codes.n_query, step):
        rows = slice(start, min(start + step, codes.n_query))
        if counting:
            yield rows, _topk_counting(codes, rows, k)
        elif ties == "stable":
            yield rows, _topk_stable(codes, rows, k)
        else:
            yield rows, _topk_numpy(codes, rows, k, dtype)
