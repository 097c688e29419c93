"""Which entries of a first-stage ranking get re-ranked: the top-K shortlist, in two modes.

* ``"gnd"`` -- the revisitop evaluation convention of DELG and the official CVNet test: walking
  down the ranking, the images a protocol ignores are skipped (junk always; also *hard* for Easy
  and *easy* for Hard) and the first K others are taken, one shortlist per protocol. It reads the
  ground truth, so it is an evaluation protocol, not something a deployed search can do.
* ``"plain"`` -- the first K entries of the ranking, no ground truth: what a real query gets.

A shortlist is the list of **positions** in the query's ranking column; the fused order is written
back into exactly those positions (:mod:`bitseek.rerank.fusion`), so skipped entries stay put.
Every result carries its mode and its description (:data:`SHORTLIST_MODES`) for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.eval.revisited import PROTOCOLS, protocol_gnd

__all__ = ["DEFAULT_K", "SHORTLIST_MODES", "check_mode", "shortlist_positions", "shortlists"]

DEFAULT_K = 100
SHORTLIST_MODES: dict[str, str] = {
    "gnd": "ground-truth-aware (revisitop/DELG/CVNet convention: junk skipped; hard excluded for Easy, "
           "easy excluded for Hard)",
    "plain": "plain top-K of the first-stage ranking (no ground truth)",
}


def check_mode(mode: str, k: int) -> None:
    if mode not in SHORTLIST_MODES:
        raise ConfigError(f"shortlist mode must be one of {sorted(SHORTLIST_MODES)}, got {mode!r}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"shortlist size k must be a positive integer, got {k!r}")


def shortlist_positions(column: np.ndarray, k: int, skip: np.ndarray | None = None) -> np.ndarray:
    """Positions (ascending) of the first ``k`` entries of ``column`` not in ``skip``.

    Only a prefix of ``k + len(skip)`` entries can hold them, so a 1M-long ranking costs O(k)."""
    if skip is None or skip.size == 0:
        return np.arange(min(k, column.shape[0]), dtype=np.int64)
    head = column[: k + skip.size]
    return np.flatnonzero(~np.isin(head, skip))[:k].astype(np.int64)


def shortlists(ranks: np.ndarray, k: int = DEFAULT_K, mode: str = "plain", gnd: Any = None,
               protocols: Sequence[str] = PROTOCOLS) -> dict[str, list[np.ndarray]]:
    """``{protocol: [positions of query i, ...]}`` for an ``(n_rows, n_query)`` rank matrix.

    ``"plain"`` gives every protocol the same arrays; ``"gnd"`` needs the revisitop ground truth
    (the loaded dict or its per-query list)."""
    check_mode(mode, k)
    if ranks.ndim != 2:
        raise InputError(f"ranks: expected a 2-D (n_db, n_query) array, got shape {ranks.shape}")
    nq = ranks.shape[1]
    if mode == "plain":
        plain = [shortlist_positions(ranks[:, i], k) for i in range(nq)]
        return {p: plain for p in protocols}
    if gnd is None:
        raise ConfigError("shortlist mode 'gnd' needs the ground truth (gnd); use mode 'plain' without one")
    out: dict[str, list[np.ndarray]] = {}
    for p in protocols:
        pg = protocol_gnd(gnd, p)
        if len(pg) != nq:
            raise InputError(f"ranks has {nq} query columns but the ground truth has {len(pg)} queries")
        out[p] = [shortlist_positions(ranks[:, i], k, pg[i]["junk"]) for i in range(nq)]
    return out
