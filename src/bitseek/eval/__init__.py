"""The one evaluator: hashing metrics (mAP@K, mAP@topK, P@k, R@k, PR curves) and the Revisited protocol.

The evaluator knows rankings, codes and labels, never models. Protocol details and their sources
are in ``docs/protocols.md``.
"""

from bitseek.eval import revisited
from bitseek.eval.hashing import (
    PRCurve,
    RankPRCurve,
    deephash_pr_ranks,
    map_at_k,
    map_at_k_ranked,
    map_at_topk,
    map_at_topk_ranked,
    precision_at_k,
    precision_recall,
    precision_recall_at_ranks,
    recall_at_k,
)

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
    "revisited",
]
