"""Re-ranking of first-stage shortlists (CVNet correlation verification; SuperGlobal).

Call signature (what ``bitseek retrieval test --rerank NAME`` does)::

    from bitseek.rerank import RerankInputs, build_reranker, ranked_scores, rerank_ranks
    rr = build_reranker("cvnet", RerankInputs(model=m, query_maps=qmaps, db_maps=dbmaps))
    res = rerank_ranks(ranks, ranked_scores(sim, ranks), rr, mode="gnd", k=100, gnd=gnd)
    evaluate(res.ranks, gnd); print(res.describe())

* ``ranks``: (n_db, n_query) int database indices, column i best first (as ``eval.revisited``);
  ``sim``: (n_db, n_query) first-stage similarity; ``mode``: ``"gnd"`` | ``"plain"``
  (:data:`SHORTLIST_MODES`); ``res.ranks``: ``{protocol: (n_db, n_query)}``.
* A re-ranker: ``rr.rerank(query, ranking (K,), similarity (K,)) -> Reranked(ranking, scores)``;
  registered in ``registry.RERANKERS`` as ``factory(inputs: RerankInputs, **options) -> Reranker``
  (see :mod:`bitseek.rerank.base`).
"""

from bitseek.rerank.base import (
    MapSource,
    Reranked,
    Reranker,
    RerankInputs,
    ScoringReranker,
    build_reranker,
)
from bitseek.rerank.binary import binary_first_stage, binary_stage_cost
from bitseek.rerank.cvnet import CVNetReranker
from bitseek.rerank.fusion import (
    FUSION_WEIGHT,
    RerankResult,
    fuse,
    ranked_scores,
    rerank_ranks,
    write_back,
)
from bitseek.rerank.shortlist import (
    DEFAULT_K,
    SHORTLIST_MODES,
    shortlist_positions,
    shortlists,
)
from bitseek.rerank.superglobal import SuperGlobalReranker, superglobal_ranks

__all__ = [
    "DEFAULT_K",
    "FUSION_WEIGHT",
    "SHORTLIST_MODES",
    "CVNetReranker",
    "MapSource",
    "RerankInputs",
    "RerankResult",
    "Reranked",
    "Reranker",
    "ScoringReranker",
    "SuperGlobalReranker",
    "binary_first_stage",
    "binary_stage_cost",
    "build_reranker",
    "fuse",
    "ranked_scores",
    "rerank_ranks",
    "shortlist_positions",
    "shortlists",
    "superglobal_ranks",
    "write_back",
]
