"""Diagnostics beside the protocol numbers: float ceilings, how codes use their bits, what a model learned.

When a hash scores low, these tell the reasons apart: the float features themselves rank badly
(:func:`float_map` on the inputs), the model's float representation is weak
(:func:`representation_maps` on, e.g., ``ConMH.features``), or the binarisation loses what the
representation had (:func:`bit_usage`: unbalanced, correlated or colliding bits). Like the rest of
the evaluator they see arrays and labels; a model enters only as a function from a batch to named
float tensors.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bitseek.errors import InputError
from bitseek.eval.hashing import map_at_k_ranked

__all__ = ["bit_usage", "cosine_ranking", "float_map", "representation_maps"]

DEFAULT_KS = (5, 20, 100)


def _unit_rows(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"{name}: expected a non-empty (n, d) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: holds NaN or inf")
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a / np.where(norm > 0, norm, 1.0))


def cosine_ranking(query: Any, database: Any, k: int) -> np.ndarray:
    """(n_query, k) database positions by cosine similarity, best first, from the exact float-ip index."""
    from bitseek.index import make_index

    q, db = _unit_rows(query, "query"), _unit_rows(database, "database")
    if q.shape[1] != db.shape[1]:
        raise InputError(f"query rows are {q.shape[1]}-d, database rows {db.shape[1]}-d")
    index = make_index("float-ip", dim=int(db.shape[1]))
    index.add(db, np.arange(len(db), dtype=np.int64))
    _, ids = index.search(q, min(int(k), len(db)))
    return np.asarray(ids, dtype=np.int64)


def float_map(query: Any, database: Any, query_labels: Any, db_labels: Any,
              ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """mAP@K (the divide-by-K protocol) of cosine ranking on float vectors, e.g. mean-pooled features."""
    ks = [int(k) for k in ks]
    ranking = cosine_ranking(query, database, max(ks))
    return {f"mAP@{k}": v for k, v in map_at_k_ranked(ranking, query_labels, db_labels, ks).items()}


def bit_usage(codes: Any) -> dict[str, float]:
    """How a code set uses its bits, from ±1 (or 0/1, or ternary) codes (n, bits).

    ``mean_abs_bit_mean``: 0 when every bit splits the set in half, 1 when a bit never changes;
    ``mean_abs_bit_correlation`` and ``bit_pairs_correlated_above_0.5``: redundancy between bits
    (constant bits count as uncorrelated); ``distinct_codes_fraction``: 1 when no two items collide.
    """
    c = np.asarray(codes, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 2 or c.shape[1] < 2:
        raise InputError(f"bit_usage: expected codes of shape (n >= 2, bits >= 2), got {c.shape}")
    if c.min() >= 0:  # 0/1 bits -> ±1
        c = 2.0 * c - 1.0
    centred = c - c.mean(axis=0)
    std = np.sqrt((centred ** 2).mean(axis=0))
    z = centred / np.where(std > 0, std, 1.0)
    corr = np.abs(z.T @ z / c.shape[0])
    off = corr[~np.eye(c.shape[1], dtype=bool)]
    return {"mean_abs_bit_mean": float(np.abs(c.mean(axis=0)).mean()),
            "mean_abs_bit_correlation": float(off.mean()),
            "bit_pairs_correlated_above_0.5": float(np.mean(off > 0.5)),
            "distinct_codes_fraction": len({r.tobytes() for r in np.sign(c)}) / c.shape[0]}


def _pooled(represent: Callable[[dict[str, Any]], Mapping[str, Any]], split: Any,
            batch_size: int) -> dict[str, np.ndarray]:
    """Every named representation of a split, mean-pooled over frames when it has a frame axis."""
    import torch
    from torch.utils.data import DataLoader

    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for batch in DataLoader(split, batch_size=batch_size, shuffle=False):
            for name, value in represent(batch).items():
                v = value.detach().float()
                parts.setdefault(name, []).append((v.mean(dim=1) if v.ndim == 3 else v).cpu().numpy())
    if not parts:
        raise InputError("representation_maps: the split is empty or the function returned nothing")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def representation_maps(represent: Callable[[dict[str, Any]], Mapping[str, Any]], query: Any, database: Any,
                        query_labels: Any, db_labels: Any, ks: Sequence[int] = DEFAULT_KS,
                        batch_size: int = 256) -> dict[str, dict[str, float]]:
    """:func:`float_map` of each float representation a model gives, e.g. ``represent=model.features``.

    ``query`` and ``database`` are datasets of batchable items; (B, T, d) outputs are mean-pooled
    over frames, as the codes are.
    """
    q, db = _pooled(represent, query, batch_size), _pooled(represent, database, batch_size)
    return {name: float_map(q[name], db[name], query_labels, db_labels, ks) for name in q}
