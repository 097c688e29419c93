"""The re-ranker interface: a query's shortlist in, the same database indices re-ordered out.

Every re-ranker (CVNet's correlation verification, SuperGlobal's descriptor refinement) has one call::

    reranked = reranker.rerank(query, ranking, similarity)
    # query:      int, row of the query in the features the re-ranker was built with
    # ranking:    (K,) int64 database indices, best first (the shortlist)
    # similarity: (K,) float, the first-stage score of each ranking entry (global cosine)
    # -> Reranked(ranking=(K,) int64, a permutation of `ranking`; scores=(K,) float64, descending)

Re-rankers are built by name from the features they need, through ``registry.RERANKERS``::

    from bitseek.rerank import RerankInputs, build_reranker
    inputs = RerankInputs(model=cvnet, query_maps=qmaps, db_maps=dbmaps,          # cvnet
                          query_global=Q, db_global=X)                            # superglobal
    reranker = build_reranker("cvnet", inputs, batch_size=8)   # == RERANKERS.create("cvnet", inputs=inputs, ...)

A factory registered in ``RERANKERS`` has the signature ``factory(inputs: RerankInputs, **options) ->
Reranker`` and takes from ``inputs`` only what it needs (a missing feature is a one-line
ConfigError naming the field). Pair-scoring re-rankers subclass :class:`ScoringReranker`: they
implement ``score(query, candidates)`` and get ``rerank`` as global similarity + ``weight`` x score
(CVNet's fusion, ``weight = 0.5``). Whole-matrix driving (shortlist per protocol, write-back into
the shortlisted positions) is :func:`bitseek.rerank.fusion.rerank_ranks`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from bitseek.errors import ConfigError, InputError

__all__ = ["MapSource", "RerankInputs", "Reranked", "Reranker", "ScoringReranker", "build_reranker", "check_shortlist"]


class MapSource(Protocol):
    """Per-image dense maps, e.g. a list of (C, H, W) arrays or a view over a feature cache.

    Indexing returns one image's map (numpy array or torch tensor, any float dtype); shapes may
    differ between images. Reading a map should touch only that image's rows."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Any: ...


@dataclass
class RerankInputs:
    """Everything a re-ranker may need; each re-ranker reads only its own fields.

    ``query_global``/``db_global``: (n_query, D) / (n_db, D) L2-normalised descriptors (numpy or
    torch). ``query_maps``/``db_maps``: per-image dense maps (CVNet: fp16 ``rerank_features``
    rows, (1024, H/16, W/16) each). ``model``: the network that scores them."""

    model: Any = None
    query_global: Any = None
    db_global: Any = None
    query_maps: MapSource | None = None
    db_maps: MapSource | None = None

    def need(self, reranker: str, *names: str) -> tuple[Any, ...]:
        """The named fields, or a ConfigError saying which one ``reranker`` lacks."""
        out = []
        for n in names:
            v = getattr(self, n)
            if v is None:
                raise ConfigError(f"re-ranker {reranker!r} needs RerankInputs.{n}; it was not given")
            out.append(v)
        return tuple(out)


@dataclass(frozen=True, eq=False)
class Reranked:
    """One query's re-ranked shortlist: database indices best first and their final scores."""

    ranking: np.ndarray
    scores: np.ndarray


def check_shortlist(ranking: Any, similarity: Any, where: str = "rerank") -> tuple[np.ndarray, np.ndarray]:
    """Validated (K,) int64 ranking and (K,) float64 similarity of equal length."""
    r = np.asarray(ranking)
    s = np.asarray(similarity, dtype=np.float64)
    if r.ndim != 1 or not (r.size == 0 or np.issubdtype(r.dtype, np.integer)):
        raise InputError(f"{where}: ranking must be a 1-D array of integer database indices, got "
                         f"{r.dtype} {r.shape}")
    if s.shape != r.shape:
        raise InputError(f"{where}: similarity has shape {s.shape}, ranking {r.shape}; one score per entry")
    if r.size and r.min() < 0:
        raise InputError(f"{where}: database indices must be >= 0, found {int(r.min())}")
    return r.astype(np.int64, copy=False), s


class Reranker(ABC):
    """Re-orders one query's shortlist. Subclasses set ``name`` (their RERANKERS key)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def rerank(self, query: int, ranking: np.ndarray, similarity: np.ndarray) -> Reranked:
        """(K,) shortlist + first-stage scores -> the same indices re-ordered, with final scores."""

    def rerank_many(self, query: int, shortlists: Mapping[str, tuple[np.ndarray, np.ndarray]]
                    ) -> dict[str, Reranked]:
        """Several shortlists of one query (one per protocol): ``{key: (ranking, similarity)}``."""
        return {key: self.rerank(query, r, s) for key, (r, s) in shortlists.items()}


class ScoringReranker(Reranker):
    """A re-ranker that scores each (query, candidate) pair on its own; fused as sim + weight x score.

    ``rerank_many`` scores the union of the shortlists once (the Easy/Medium/Hard shortlists of a
    query overlap almost entirely), as the official CVNet test does with its (db, query) cache."""

    weight: float = 0.5

    @abstractmethod
    def score(self, query: int, candidates: np.ndarray) -> np.ndarray:
        """(K,) float64 re-rank scores of the pairs (query, candidates[j])."""

    def rerank(self, query: int, ranking: np.ndarray, similarity: np.ndarray) -> Reranked:
        return self.rerank_many(query, {"": (ranking, similarity)})[""]

    def rerank_many(self, query: int, shortlists: Mapping[str, tuple[np.ndarray, np.ndarray]]
                    ) -> dict[str, Reranked]:
        from bitseek.rerank.fusion import fuse

        checked = {k: check_shortlist(r, s, f"{self.name or 'rerank'}[{k}]" if k else self.name or "rerank")
                   for k, (r, s) in shortlists.items()}
        union = np.unique(np.concatenate([r for r, _ in checked.values()])) if checked else np.zeros(0, np.int64)
        scores = np.asarray(self.score(query, union), dtype=np.float64) if union.size else np.zeros(0)
        if scores.shape != union.shape:
            raise RuntimeError(f"{type(self).__name__}.score returned shape {scores.shape} for {union.size} pairs")
        out = {}
        for k, (r, s) in checked.items():
            local = scores[np.searchsorted(union, r)]
            out[k] = fuse(r, s, local, self.weight)
        return out


def build_reranker(name: str, inputs: RerankInputs, **options: Any) -> Reranker:
    """The re-ranker registered as ``name``, built from ``inputs`` (unknown names: ConfigError)."""
    from bitseek.registry import RERANKERS

    entry = RERANKERS.get(name)
    rr = entry.factory(inputs, **options)
    if not isinstance(rr, Reranker):
        raise TypeError(f"re-ranker {name!r}: factory returned {type(rr).__name__}, not a Reranker")
    return rr

