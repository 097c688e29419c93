"""Hashing-retrieval metrics: the video "mAP@K", DeepHash's mAP@topK, P@k and PR curves.

All metrics rank the database by Hamming distance ``0.5·(bits − q·d)`` and call an item relevant
when it shares at least one label with the query. They run in query chunks, select only the
top-k per query (exactly, including at tied distances) and compute relevance only where it is
needed, so FCVID all-vs-all (45,600² pairs) fits in a few hundred MB instead of the reference's
~40 GB. See ``docs/protocols.md`` for each quirk and where it comes from.

Inputs shared by every function:

* codes: ±1 (or ternary ±1/0) numbers, booleans, or packed ``uint8`` rows (numpy.packbits
  order); ``db_codes=None`` means the queries are the database (FCVID), the self-match counts;
* labels: multi-hot 0/1 matrices ``(n, classes)`` or integer class vectors ``(n,)``;
* ``ties``: ``"stable"`` (equal distances ordered by database index; deterministic everywhere) or
  ``"numpy"`` (numpy's default argsort of each query's distance column in ``numpy_dtype``: the
  reference implementations' order, for matching published numbers bit for bit).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, NamedTuple

import numpy as np

from bitseek.errors import InputError
from bitseek.eval.inputs import Codes, Labels, check_ks, prepare_codes, prepare_labels, prepare_labels_for
from bitseek.eval.ranking import Ties, check_ties, chunk_rows, iter_topk

__all__ = [
    "map_at_k",
    "map_at_k_ranked",
    "map_at_topk",
    "map_at_topk_ranked",
    "precision_at_k",
    "precision_recall",
    "precision_recall_at_ranks",
    "recall_at_k",
    "deephash_pr_ranks",
    "PRCurve",
    "RankPRCurve",
    "DEFAULT_KS",
]

DEFAULT_KS = (5, 10, 20, 40, 60, 80, 100)

log = logging.getLogger(__name__)


def _prepare(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any) -> tuple[Codes, Labels]:
    codes = prepare_codes(query_codes, db_codes)
    return codes, prepare_labels(query_labels, db_labels, codes)


def map_at_k(
    query_codes: Any,
    db_codes: Any | None,
    query_labels: Any,
    db_labels: Any | None = None,
    ks: Any = DEFAULT_KS,
    ties: Ties = "stable",
    *,
    per_query: bool = False,
    numpy_dtype: str = "float32",
    chunk_size: int | None = None,
) -> dict[int, float] | tuple[dict[int, float], dict[int, np.ndarray]]:
    """mAP@K of self-supervised video hashing (SSVH/BTH/ConMH/S5VH/WSCH protocol).

    For each query and cut-off K: ``AP@K = (1/K)·Σ_{r≤K, rel(r)} hits(r)/r`` — divided by K, not
    by the number of hits, so the ceiling is ``min(1, n_relevant/K)``; queries without a hit
    score 0 and stay in the mean.

    Returns ``{K: mAP}``; with ``per_query=True`` also ``{K: (n_query,) AP array}``. With
    ``ties="numpy"`` the result equals the reference's ``tools.mAP`` bit for bit (same float
    operations in the same order) on the same numpy build.
    """
    check_ties(ties, numpy_dtype)
    codes, labels = _prepare(query_codes, db_codes, query_labels, db_labels)
    kl = check_ks(ks, codes.n_db)
    kmax = max(kl)
    aps = {k: np.empty(codes.n_query, dtype=np.float64) for k in kl}
    for rows, idx in iter_topk(codes, kmax, ties, numpy_dtype=numpy_dtype, chunk_size=chunk_size):
        for k, ap in _ap_at_k(labels.relevant_at(rows, idx), kl).items():
            aps[k][rows] = ap
    maps = {k: float(np.mean(aps[k])) for k in kl}
    return (maps, aps) if per_query else maps


def _ap_at_k(rel: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Divide-by-K AP of each row of a ranked (n, >= max K) relevance matrix, for every K."""
    kmax = max(ks)
    rel = rel[:, :kmax]
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    prec = hits / np.arange(1, kmax + 1, dtype=np.float64)
    # Sequential cumsum adds the same terms in the same order as the reference's Python loop.
    acc = np.cumsum(np.where(rel, prec, 0.0), axis=1)
    return {k: acc[:, k - 1] / float(k) for k in ks}


def map_at_k_ranked(ranking: Any, query_labels: Any, db_labels: Any | None = None,
                    ks: Any = DEFAULT_KS) -> dict[int, float]:
    """The same mAP@K for rankings made elsewhere: float search, a re-ranker, an ANN index.

    ``ranking`` is (n_query, >= max K) database indices, best first (``db_labels=None``: the
    queries are the database). Duplicate ids in a row are refused, as a ranking cannot hold an
    item twice.
    """
    ids, labels = _check_ranking(ranking, query_labels, db_labels)
    kl = check_ks(ks, min(ids.shape[1], len(labels.db)))
    rel = labels.relevant_at(slice(0, ids.shape[0]), ids[:, : max(kl)])
    return {k: float(np.mean(ap)) for k, ap in _ap_at_k(rel, kl).items()}


def _topk_cutoff(topk: int | None, n_db: int) -> int:
    """``None``/0 -> the whole database; above it -> the whole database, with a warning (the
    reference slices ``[0:topk]``, so mAP@5000 on a 3,000-item database is its mAP@all);
    negatives refused (DeepHash's -1 is a slicing accident)."""
    is_int = isinstance(topk, (int, np.integer)) and not isinstance(topk, bool)
    if topk is None or (is_int and topk == 0):
        return n_db
    if is_int and topk < 0:
        raise InputError(
            f"topk={topk}: negative cut-offs are not accepted (DeepHash-pytorch's -1 means "
            f"'all but the last item' through slicing); use topk=None for the whole database "
            f"or topk={n_db - 1} to reproduce that slice"
        )
    if is_int and topk > n_db:
        log.warning("topk=%d is larger than the database (%d items): ranking all of it, as the "
                    "reference's slice does (the value is mAP@all)", int(topk), n_db)
        return n_db
    return check_ks(topk, n_db, "topk")[0]


def _ap_at_topk(rel: np.ndarray) -> np.ndarray:
    """DeepHash ``CalcTopMap`` AP of each row of a ranked (n, k) relevance matrix (0 without a hit)."""
    pos = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    hits = np.cumsum(rel, axis=1, dtype=np.int64)
    tsum = hits[:, -1]
    s = np.where(rel, hits / pos, 0.0).sum(axis=1)
    return np.divide(s, tsum, out=np.zeros_like(s), where=tsum > 0)


def map_at_topk(
    query_codes: Any,
    db_codes: Any | None,
    query_labels: Any,
    db_labels: Any | None = None,
    topk: int | None = None,
    ties: Ties = "stable",
    *,
    per_query: bool = False,
    numpy_dtype: str = "float32",
    chunk_size: int | None = None,
) -> float | tuple[float, np.ndarray]:
    """mAP@topK as DeepHash-pytorch's ``CalcTopMap`` (also CSCE-Net, HashNet-style splits).

    Per query: AP = mean over the hits within the top-k of ``hits(r)/r`` (divided by the number
    of hits *retrieved in the top-k*); a query with no hit there scores 0 and still counts in the
    mean over all queries. ``topk=None`` or ``0`` ranks the whole database ("mAP@all").

    DeepHash-pytorch itself passes ``topK=-1`` for "all", and its slice ``[0:-1]`` silently drops
    the last-ranked item; negative values are refused here: use ``topk=None`` for the whole
    database or ``topk=n_db - 1`` to reproduce that slice.
    """
    check_ties(ties, numpy_dtype)
    codes, labels = _prepare(query_codes, db_codes, query_labels, db_labels)
    k = _topk_cutoff(topk, codes.n_db)
    ap = np.empty(codes.n_query, dtype=np.float64)
    for rows, idx in iter_topk(codes, k, ties, numpy_dtype=numpy_dtype, chunk_size=chunk_size):
        ap[rows] = _ap_at_topk(labels.relevant_at(rows, idx))
    m = float(np.mean(ap))
    return (m, ap) if per_query else m


def _check_ranking(ranking: Any, query_labels: Any, db_labels: Any | None) -> tuple[np.ndarray, Labels]:
    ids = np.asarray(ranking)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"ranking must be a 2-D integer array of database ids, got {ids.dtype} {ids.shape}")
    labels = prepare_labels_for(query_labels, db_labels, ids.shape[0], None, db_labels is None)
    n_db = len(labels.db)
    if ids.size and (ids.min() < 0 or ids.max() >= n_db):
        raise InputError(f"ranking holds ids outside 0..{n_db - 1}")
    srt = np.sort(ids, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        raise InputError("ranking repeats a database id within a row")
    return ids, labels


def map_at_topk_ranked(ranking: Any, query_labels: Any, db_labels: Any | None = None,
                       topk: int | None = None) -> float:
    """:func:`map_at_topk` for rankings made elsewhere (float inner-product search, a re-ranker).

    ``ranking`` is (n_query, >= topk) database indices, best first; ``topk=None`` uses every
    ranked column (a full ranking gives mAP@all).
    """
    ids, labels = _check_ranking(ranking, query_labels, db_labels)
    k = _topk_cutoff(topk, ids.shape[1])
    return float(np.mean(_ap_at_topk(labels.relevant_at(slice(0, ids.shape[0]), ids[:, :k]))))


def precision_at_k(
    query_codes: Any,
    db_codes: Any | None,
    query_labels: Any,
    db_labels: Any | None = None,
    ks: Any = DEFAULT_KS,
    ties: Ties = "stable",
    *,
    per_query: bool = False,
    numpy_dtype: str = "float32",
    chunk_size: int | None = None,
) -> dict[int, float] | tuple[dict[int, float], dict[int, np.ndarray]]:
    """Mean precision@k: the fraction of relevant items among each query's top-k, averaged.

    Every query counts (one without relevant items scores 0), as in DeepHash-pytorch's
    ``pr_curve`` precision and ConMH's ``tools.topK``.
    """
    check_ties(ties, numpy_dtype)
    codes, labels = _prepare(query_codes, db_codes, query_labels, db_labels)
    kl = check_ks(ks, codes.n_db)
    kmax = max(kl)
    prec = {k: np.empty(codes.n_query, dtype=np.float64) for k in kl}
    for rows, idx in iter_topk(codes, kmax, ties, numpy_dtype=numpy_dtype, chunk_size=chunk_size):
        hits = np.cumsum(labels.relevant_at(rows, idx), axis=1, dtype=np.int64)
        for k in kl:
            prec[k][rows] = hits[:, k - 1] / float(k)
    means = {k: float(np.mean(prec[k])) for k in kl}
    return (means, prec) if per_query else means


class PRCurve(NamedTuple):
    """Precision and recall of the Hamming ball of each radius (``c[0], c[1]`` = precision, recall)."""

    precision: np.ndarray
    recall: np.ndarray
    radius: np.ndarray


def precision_recall(
    query_codes: Any,
    db_codes: Any | None,
    query_labels: Any,
    db_labels: Any | None = None,
    *,
    average: Literal["micro", "macro"] = "micro",
    chunk_size: int | None = None,
) -> PRCurve:
    """PR curve over Hamming radius: the retrieved set at radius r is every item at distance ≤ r.

    Radii run 0..bits in steps of 1 (steps of 0.5 when ternary codes make half-integer
    distances possible). Tie order plays no part: a ball contains all or none of a distance.

    ``average="micro"`` (default) pools all query–item pairs, the classic hashing definition
    (``recall_precision.m`` of the SH/ITQ/KSH evaluation code)::

        precision(r) = Σ_q |rel_q ∩ ball_q(r)| / Σ_q |ball_q(r)|
        recall(r)    = Σ_q |rel_q ∩ ball_q(r)| / Σ_q |rel_q|

    ``average="macro"`` averages per-query precision over queries whose ball is non-empty and
    per-query recall over queries with at least one relevant item. Precision is NaN at a radius
    where no query retrieves anything (0/0), never silently 0.
    """
    if average not in ("micro", "macro"):
        raise InputError(f"average must be 'micro' or 'macro', got {average!r}")
    codes, labels = _prepare(query_codes, db_codes, query_labels, db_labels)
    step = 1 if codes.ternary else codes.key_per_bit  # rank-key units between radii
    nbins = codes.key_max + 1
    ret = np.zeros(nbins, dtype=np.float64)  # micro: pooled counts; macro: sums of ratios
    ret_rel = np.zeros(nbins, dtype=np.float64)
    n_rel_total = 0.0
    p_count = np.zeros(nbins, dtype=np.int64)
    r_count = 0
    rows_per = chunk_rows(codes.n_query, codes.n_db, chunk_size)
    for start in range(0, codes.n_query, rows_per):
        rows = slice(start, min(start + rows_per, codes.n_query))
        key = codes.rank_key(rows)
        rel = labels.relevant_all(rows)
        r = key.shape[0]
        flat = key.astype(np.int64) + (np.arange(r, dtype=np.int64) * nbins)[:, None]
        c_all = np.bincount(flat.ravel(), minlength=r * nbins).reshape(r, nbins).cumsum(axis=1)
        c_rel = np.bincount(flat[rel], minlength=r * nbins).reshape(r, nbins).cumsum(axis=1)
        n_rel = rel.sum(axis=1)
        if average == "micro":
            ret += c_all.sum(axis=0)
            ret_rel += c_rel.sum(axis=0)
            n_rel_total += float(n_rel.sum())
        else:
            nz = c_all > 0
            ret += np.divide(c_rel, c_all, out=np.zeros(c_all.shape), where=nz).sum(axis=0)
            p_count += nz.sum(axis=0)
            has = n_rel > 0
            ret_rel += (c_rel[has] / n_rel[has, None]).sum(axis=0)
            r_count += int(has.sum())
    grid = np.arange(0, nbins, step)
    radius = grid / codes.key_per_bit
    if average == "micro":
        if n_rel_total == 0:
            raise InputError("no query has a relevant database item: recall is undefined")
        precision = np.full(nbins, np.nan)
        np.divide(ret_rel, ret, out=precision, where=ret > 0)
        recall = ret_rel / n_rel_total
    else:
        if r_count == 0:
            raise InputError("no query has a relevant database item: recall is undefined")
        precision = np.full(nbins, np.nan)
        np.divide(ret, p_count, out=precision, where=p_count > 0)
        recall = ret_rel / r_count
    return PRCurve(precision[grid], recall[grid], radius.astype(np.float64))


# --------------------------------------------------------------------------- rank-based PR (DeepHash)


class RankPRCurve(NamedTuple):
    """Mean precision and recall after the first ``ranks[i]`` results (1-based rank cut-offs)."""

    precision: np.ndarray
    recall: np.ndarray
    ranks: np.ndarray
    n_queries: int  # queries averaged (see precision_recall_at_ranks)


def deephash_pr_ranks(n_db: int) -> np.ndarray:
    """DeepHash-pytorch's sampling of its PR curve (``validate``): every 100th rank, then every
    rank of the last partial hundred. 1-based cut-offs (its 0-based ``index`` + 1)."""
    hundreds = np.arange(100, (n_db // 100) * 100 + 1, 100, dtype=np.int64)
    tail = np.arange((n_db // 100) * 100 + 1, n_db + 1, dtype=np.int64)
    return np.concatenate([hundreds, tail])


def precision_recall_at_ranks(
    query_codes: Any,
    db_codes: Any | None,
    query_labels: Any,
    db_labels: Any | None = None,
    ranks: Any | None = None,
    topk: int | None = None,
    ties: Ties = "stable",
    *,
    numpy_dtype: str = "float32",
    chunk_size: int | None = None,
) -> RankPRCurve:
    """Rank-based PR curve as DeepHash-pytorch's ``CalcTopMapWithPR`` + ``validate`` (not the Hamming-ball PR).

    Per query over the full ranking: ``P(r) = hits(r)/r`` and ``R(r) = hits(r)/n_relevant``;
    the curve is the mean over the queries that have at least one relevant item within the top
    ``topk`` (DeepHash skips the others: their rows stay 0 and its ``recall[:, -1] == 1`` filter
    drops them; ``topk=None`` = every query with a relevant item). ``ranks`` are 1-based
    cut-offs, default :func:`deephash_pr_ranks`. Under ``ties="numpy"`` the values equal the
    reference's bit for bit (recall divided in float32 as it does).
    """
    check_ties(ties, numpy_dtype)
    codes, labels = _prepare(query_codes, db_codes, query_labels, db_labels)
    n = codes.n_db
    r = deephash_pr_ranks(n) if ranks is None else np.asarray(check_ks(list(np.atleast_1d(ranks)), n, "ranks"), np.int64)
    k = _topk_cutoff(topk, n)
    prec_rows: list[np.ndarray] = []
    rec_rows: list[np.ndarray] = []
    for rows, idx in iter_topk(codes, n, ties, numpy_dtype=numpy_dtype, chunk_size=chunk_size):
        rel = labels.relevant_at(rows, idx)
        keep = rel[:, :k].any(axis=1)
        if not keep.any():
            continue
        hits = np.cumsum(rel[keep], axis=1, dtype=np.int64)[:, r - 1]
        n_rel = rel[keep].sum(axis=1)
        prec_rows.append(hits / r.astype(np.float64))
        rec_rows.append((hits.astype(np.float32) / n_rel[:, None].astype(np.float32)).astype(np.float64))
    if not prec_rows:
        raise InputError("no query has a relevant database item within the top-k: the PR curve is undefined")
    # C order makes np.mean(axis=0) add the rows one after another, as the reference's full matrix does.
    prec = np.ascontiguousarray(np.concatenate(prec_rows))
    rec = np.ascontiguousarray(np.concatenate(rec_rows))
    return RankPRCurve(np.mean(prec, 0), np.mean(rec, 0), r, int(prec.shape[0]))


def recall_at_k(
    query_codes: Any,
    db_codes: Any | None,
    query_labels: Any,
    db_labels: Any | None = None,
    ks: Any = DEFAULT_KS,
    ties: Ties = "stable",
    *,
    numpy_dtype: str = "float32",
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Mean recall@k, ``hits(k) / n_relevant``, over the queries that have a relevant item (for
    the others recall is undefined); the recall of :func:`precision_recall_at_ranks` at ``ks``."""
    c = precision_recall_at_ranks(query_codes, db_codes, query_labels, db_labels, ranks=list(np.atleast_1d(ks)),
                                  ties=ties, numpy_dtype=numpy_dtype, chunk_size=chunk_size)
    return {int(k): float(v) for k, v in zip(c.ranks, c.recall)}
