"""SuperGlobal's training-free re-ranking (Shao et al., "Global Features are All You Need for Image
Retrieval and Reranking", ICCV 2023): MDescAug + RerankwMDA on global descriptors only.

For one query with descriptor ``q`` and its first-stage top-M candidates ``x_1 .. x_M`` (best first):

1. **MDescAug.** Within the top-M, each candidate's K+1 most similar candidates (inner product; the
   list includes the candidate itself, normally first) are averaged with weight 1 for the first of
   them and ``beta * similarity`` for the other K: ``r_i = sum_j w_ij x_j / sum_j w_ij`` (not
   re-normalised). The step-2 score is ``s_i = q . r_i``.
2. **RerankwMDA.** The K+1 refined descriptors with the best step-2 scores are max-pooled element-wise
   into an expanded query ``e``; the final score is ``(s_i + e . r_i) / 2`` and the top-M is sorted by
   it. Candidates beyond the top-M keep their first-stage order.

The weight 1 goes to the *first* entry of the similarity sort, as the official code does (that is the
candidate itself unless an exact duplicate out-scores it by rounding). Ties are broken stably (earlier
first-stage position first); the official CUDA sort leaves them unspecified. No ground truth is used,
so one ranking serves Easy/Medium/Hard: the official test re-ranks the plain top-400
(``rerank_ranks(..., mode="plain", k=DEFAULT_M)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bitseek._array import as_numpy
from bitseek.errors import ConfigError, InputError
from bitseek.registry import RERANKERS
from bitseek.rerank.base import Reranked, Reranker, RerankInputs, check_shortlist

__all__ = ["DEFAULT_BETA", "DEFAULT_K", "DEFAULT_M", "MDAResult", "SuperGlobalReranker", "build_superglobal",
           "mdescaug", "rerank_wmda", "superglobal_ranks", "superglobal_shortlist"]

DEFAULT_M = 400  # candidates refined per query (the shortlist size)
DEFAULT_K = 9  # neighbours per candidate, the candidate itself not counted (K + 1 = 10 are averaged)
DEFAULT_BETA = 0.15  # weight factor of the neighbours' similarities


@dataclass(frozen=True, eq=False)
class MDAResult:
    """MDescAug's output for a batch of queries, in shortlist order (position j = j-th first-stage hit)."""

    refined: Tensor  # (B, M, D) refined candidate descriptors
    scores: Tensor  # (B, M) query . refined descriptor (the step-2 score)


def _check_params(k: int, beta: float) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(f"superglobal: k (neighbours besides the candidate itself) must be an integer >= 0, got {k!r}")
    if not np.isfinite(beta):
        raise ConfigError(f"superglobal: beta must be a finite number, got {beta!r}")


def _desc_sort(x: Tensor) -> Tensor:
    """Indices sorting the last dim descending; equal values keep their order."""
    return torch.sort(x, dim=-1, descending=True, stable=True).indices


def mdescaug(query: Tensor, candidates: Tensor, k: int = DEFAULT_K, beta: float = DEFAULT_BETA) -> MDAResult:
    """Top-M descriptor augmentation: ``query`` (B, D), ``candidates`` (B, M, D) -> refined + step-2 scores."""
    _check_params(k, beta)
    if query.dim() != 2 or candidates.dim() != 3 or candidates.shape[0] != query.shape[0] \
            or candidates.shape[2] != query.shape[1]:
        raise InputError(f"mdescaug: need query (B, D) and candidates (B, M, D), got {tuple(query.shape)} and "
                         f"{tuple(candidates.shape)}")
    m = candidates.shape[1]
    kk = min(k + 1, m)
    sim = candidates @ candidates.transpose(1, 2)  # (B, M, M)
    nbr = _desc_sort(sim)[..., :kk]  # (B, M, K+1), first = most similar (itself)
    w = torch.gather(sim, 2, nbr) * beta
    w[..., 0] = 1.0
    weights = torch.zeros_like(sim).scatter_(2, nbr, w)  # sparse (B, M, M): row i averages i's neighbours
    refined = (weights @ candidates) / w.sum(dim=2, keepdim=True)
    scores = torch.einsum("bd,bmd->bm", query, refined)
    return MDAResult(refined=refined, scores=scores)


def rerank_wmda(mda: MDAResult, k: int = DEFAULT_K) -> tuple[Tensor, Tensor]:
    """Re-ranking with maximum descriptor aggregation: -> (order (B, M) of shortlist positions, best first;
    final scores (B, M) in that order)."""
    _check_params(k, 0.0)
    m = mda.scores.shape[1]
    first = _desc_sort(mda.scores)  # step-2 order, as the official code builds it before the final sort
    step2 = torch.gather(mda.scores, 1, first)
    refined = torch.gather(mda.refined, 1, first.unsqueeze(-1).expand_as(mda.refined))
    expanded = refined[:, : min(k + 1, m)].max(dim=1).values  # (B, D)
    final = (step2 + torch.einsum("bd,bmd->bm", expanded, refined)) / 2.0
    second = _desc_sort(final)
    return torch.gather(first, 1, second), torch.gather(final, 1, second)


def superglobal_shortlist(query: Tensor, candidates: Tensor, k: int = DEFAULT_K,
                          beta: float = DEFAULT_BETA) -> tuple[Tensor, Tensor]:
    """MDescAug then RerankwMDA on (B, D) queries and their (B, M, D) shortlists -> (order, scores)."""
    return rerank_wmda(mdescaug(query, candidates, k, beta), k)


def _as_float_tensor(x: Any, name: str, device: torch.device | None = None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(as_numpy(x, name)))
    if t.dim() != 2:
        raise InputError(f"{name}: expected (n, D) descriptors, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{name}: descriptors must be floating point, got {t.dtype}")
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def superglobal_ranks(query: Any, db: Any, ranks: Any, m: int = DEFAULT_M, k: int = DEFAULT_K,
                      beta: float = DEFAULT_BETA, query_batch: int = 16) -> np.ndarray:
    """The official test's re-ranking of a whole rank matrix.

    ``query`` (n_query, D), ``db`` (n_db, D) L2-normalised descriptors (numpy or torch, computed on
    ``db``'s device); ``ranks`` (n, n_query) database indices, column i best first (``n`` may be a
    prefix of the database). Returns a new (n, n_query) int64 matrix: the first ``min(m, n)`` rows
    re-ranked, the rest unchanged."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ConfigError(f"superglobal: m (candidates per query) must be a positive integer, got {m!r}")
    if query_batch < 1:
        raise ConfigError(f"superglobal: query_batch must be >= 1, got {query_batch}")
    _check_params(k, beta)
    x = _as_float_tensor(db, "db")
    q = _as_float_tensor(query, "query", x.device)
    r = as_numpy(ranks, "ranks")
    if r.ndim != 2 or r.shape[1] != q.shape[0] or not np.issubdtype(r.dtype, np.integer):
        raise InputError(f"ranks: expected integer (n, {q.shape[0]}) database indices, got {r.dtype} {r.shape}")
    if q.shape[1] != x.shape[1]:
        raise InputError(f"superglobal: query descriptors have {q.shape[1]} dims, database {x.shape[1]}")
    if r.size and (r.min() < 0 or r.max() >= x.shape[0]):
        raise InputError(f"ranks: database indices must be in [0, {x.shape[0]}), found "
                         f"[{int(r.min())}, {int(r.max())}]")
    out = np.array(r, dtype=np.int64, copy=True)
    mm = min(int(m), r.shape[0])
    if mm == 0:
        return out
    top = torch.from_numpy(np.ascontiguousarray(out[:mm].T)).to(x.device)  # (n_query, M)
    for s in range(0, q.shape[0], query_batch):
        idx = top[s:s + query_batch]
        order, _ = superglobal_shortlist(q[s:s + query_batch], x[idx], k, beta)
        out[:mm, s:s + query_batch] = torch.gather(idx, 1, order).cpu().numpy().T
    return out


class SuperGlobalReranker(Reranker):
    """SuperGlobal on one query's shortlist at a time (the whole shortlist is the top-M)."""

    name = "superglobal"

    def __init__(self, query_global: Any, db_global: Any, k: int = DEFAULT_K, beta: float = DEFAULT_BETA) -> None:
        _check_params(k, beta)
        self.db = _as_float_tensor(db_global, "RerankInputs.db_global")
        self.queries = _as_float_tensor(query_global, "RerankInputs.query_global", self.db.device)
        if self.queries.shape[1] != self.db.shape[1]:
            raise InputError(f"superglobal: query descriptors have {self.queries.shape[1]} dims, database "
                             f"{self.db.shape[1]}")
        self.k, self.beta = int(k), float(beta)

    def rerank(self, query: int, ranking: np.ndarray, similarity: np.ndarray) -> Reranked:
        """The first-stage similarities are not used: SuperGlobal rescores from the descriptors."""
        r, _ = check_shortlist(ranking, similarity, self.name)
        if not 0 <= int(query) < self.queries.shape[0]:
            raise InputError(f"superglobal: query {query} out of range [0, {self.queries.shape[0]})")
        if r.size and r.max() >= self.db.shape[0]:
            raise InputError(f"superglobal: database index {int(r.max())} out of range [0, {self.db.shape[0]})")
        if r.size == 0:
            return Reranked(ranking=r.copy(), scores=np.zeros(0))
        idx = torch.from_numpy(r).to(self.db.device)
        order, scores = superglobal_shortlist(self.queries[int(query)][None], self.db[idx][None], self.k, self.beta)
        return Reranked(ranking=r[order[0].cpu().numpy()], scores=scores[0].double().cpu().numpy())


@RERANKERS.register("superglobal")
def build_superglobal(inputs: RerankInputs, k: int = DEFAULT_K, beta: float = DEFAULT_BETA) -> SuperGlobalReranker:
    """SuperGlobal (ICCV 2023): MDescAug + RerankwMDA on global descriptors; shortlist k = 400 (DEFAULT_M)."""
    q, x = inputs.need("superglobal", "query_global", "db_global")
    return SuperGlobalReranker(q, x, k=k, beta=beta)
