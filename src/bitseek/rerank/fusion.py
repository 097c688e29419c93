"""Score fusion and write-back: turn a first-stage rank matrix into re-ranked rank matrices.

The official CVNet rule: each shortlisted candidate gets ``global similarity + 0.5 x re-rank
score``; the shortlist is sorted by that (descending; ties keep the first-stage order) and written
back into the positions it occupied. Everything outside the shortlist -- the tail, and in
``"gnd"`` mode the skipped junk/ignored images inside the top -- keeps its position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitseek._array import as_numpy
from bitseek.errors import InputError
from bitseek.eval.revisited import PROTOCOLS
from bitseek.rerank.base import Reranked, Reranker, check_shortlist
from bitseek.rerank.shortlist import DEFAULT_K, SHORTLIST_MODES, shortlists

__all__ = ["FUSION_WEIGHT", "RerankResult", "fuse", "ranked_scores", "rerank_ranks", "write_back"]

FUSION_WEIGHT = 0.5  # CVNet's mix_ratio


def fuse(ranking: np.ndarray, similarity: np.ndarray, scores: np.ndarray, weight: float = FUSION_WEIGHT) -> Reranked:
    """Sort one shortlist by ``similarity + weight * scores`` (stable: ties keep the given order)."""
    r, s = check_shortlist(ranking, similarity, "fuse")
    sc = np.asarray(scores, dtype=np.float64)
    if sc.shape != r.shape:
        raise InputError(f"fuse: {sc.size} re-rank scores for {r.size} shortlist entries")
    fused = s + weight * sc
    order = np.argsort(-fused, kind="stable")
    return Reranked(ranking=r[order], scores=fused[order])


def write_back(column: np.ndarray, positions: np.ndarray, reranked: np.ndarray) -> np.ndarray:
    """A copy of ``column`` with ``reranked`` (a permutation of ``column[positions]``) at ``positions``."""
    out = np.array(column, copy=True)
    if reranked.shape != positions.shape:
        raise InputError(f"write_back: {reranked.size} re-ranked entries for {positions.size} positions")
    if not np.array_equal(np.sort(out[positions]), np.sort(reranked)):
        raise InputError("write_back: the re-ranked entries are not a permutation of the shortlisted ones")
    out[positions] = reranked
    return out


def ranked_scores(sim: Any, ranks: Any) -> np.ndarray:
    """Rank-aligned scores ``out[j, i] = sim[ranks[j, i], i]`` from an (n_db, n_query) similarity."""
    s, r = as_numpy(sim, "sim"), as_numpy(ranks, "ranks")
    if s.ndim != 2 or r.ndim != 2 or s.shape[1] != r.shape[1]:
        raise InputError(f"ranked_scores: sim {s.shape} and ranks {r.shape} must both be (n, n_query)")
    return np.take_along_axis(s, r.astype(np.int64, copy=False), axis=0)


@dataclass(eq=False)
class RerankResult:
    """Re-ranked rank matrices per protocol and what produced them (for reports)."""

    ranks: dict[str, np.ndarray]
    mode: str
    k: int
    reranker: str
    n_pairs: int = 0  # (query, candidate) pairs the re-ranker saw (shortlist entries, summed)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shortlist(self) -> str:
        return SHORTLIST_MODES[self.mode]

    def describe(self) -> str:
        """One line for a report: which re-ranker, K and shortlist mode ran."""
        return f"re-ranked top-{self.k} with {self.reranker}; shortlist: {self.mode} = {self.shortlist}"

    def to_json(self) -> dict[str, Any]:
        return {"reranker": self.reranker, "k": self.k, "shortlist_mode": self.mode,
                "shortlist": self.shortlist, "n_pairs": self.n_pairs, "seconds": self.seconds, **self.extra}


def rerank_ranks(ranks: Any, scores: Any, reranker: Reranker, *, mode: str, k: int = DEFAULT_K,
                 gnd: Any = None, protocols: Sequence[str] = PROTOCOLS,
                 progress: Callable[[int, int], None] | None = None) -> RerankResult:
    """Re-rank every query column of ``ranks`` (n_rows, n_query) and return one matrix per protocol.

    ``scores`` is rank-aligned (same shape as ``ranks``: the first-stage score of each entry; see
    :func:`ranked_scores`). ``mode`` is ``"gnd"`` (needs ``gnd``) or ``"plain"``; it has no default
    because the two give different numbers and a report must say which ran. In ``"plain"`` mode all
    protocols share one matrix (the same object)."""
    r = as_numpy(ranks, "ranks")
    s = as_numpy(scores, "scores")
    if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
        raise InputError(f"ranks: expected a 2-D integer (n_db, n_query) array, got {r.dtype} {r.shape}")
    if s.shape != r.shape:
        raise InputError(f"scores: must be rank-aligned with ranks {r.shape}, got {s.shape} "
                         "(use bitseek.rerank.fusion.ranked_scores(sim, ranks))")
    t0 = time.perf_counter()
    lists = shortlists(r, k, mode, gnd, protocols)
    protos = list(lists)
    shared = mode == "plain"
    out = {p: np.array(r, dtype=np.int64, copy=True) for p in (protos[:1] if shared else protos)}
    n_pairs = 0
    nq = r.shape[1]
    for i in range(nq):
        keys = protos[:1] if shared else protos
        short = {p: (r[lists[p][i], i], s[lists[p][i], i]) for p in keys}
        n_pairs += len(np.unique(np.concatenate([v[0] for v in short.values()])))
        done = reranker.rerank_many(i, short)
        for p in keys:
            pos = lists[p][i]
            out[p][:, i] = write_back(r[:, i], pos, done[p].ranking)
        if progress is not None:
            progress(i + 1, nq)
    if shared:
        out = {p: out[protos[0]] for p in protos}
    return RerankResult(ranks=out, mode=mode, k=int(k), reranker=reranker.name or type(reranker).__name__,
                        n_pairs=n_pairs, seconds=time.perf_counter() - t0)
