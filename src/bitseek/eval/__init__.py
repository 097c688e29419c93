"""The one evaluator: hashing metrics (mAP@K, mAP@topK, P@k, PR) and the Revisited protocol.

The evaluator knows rankings, codes and labels, never models. Protocol details and their sources
are in ``docs/protocols.md``.
"""

from bitseek.eval import revisited
from bitseek.eval.hashing import PRCurve, map_at_k, map_at_k_ranked, map_at_topk, precision_at_k, precision_recall

__all__ = ["map_at_k", "map_at_k_ranked", "map_at_topk", "precision_at_k", "precision_recall", "PRCurve", "revisited"]
