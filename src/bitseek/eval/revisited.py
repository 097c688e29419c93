"""Revisited Oxford/Paris evaluation (Radenović et al., CVPR 2018; filipradenovic/revisitop).

Reproduces revisitop's ``python/evaluate.py`` exactly (same floats, same order of additions):

* ``ranks`` is ``(n_db, n_query)`` of 0-based database indices, column i = ranking for query i;
* junk images are removed by shifting each positive's position down by the junk ranked above it;
* AP integrates the precision–recall curve with trapezoids: for the j-th positive (0-based) at
  shifted position r, ``(j/r [1 if r == 0] + (j+1)/(r+1)) / 2 · 1/n_ok``;
* P@k is capped: ``kq = min(last positive's 1-based position, k)``, ``P@k = #{pos ≤ kq} / kq``;
* queries without positives get NaN AP/P@k and are left out of the means.

``evaluate`` builds the Easy / Medium / Hard protocols from a ground-truth file as revisitop's
``example_evaluate.py`` does and reports percentages rounded as it prints them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitseek._array import as_numpy
from bitseek.data.revisited import load_gnd  # re-exported: the loader moved to the data layer
from bitseek.errors import InputError

__all__ = [
    "PROTOCOLS",
    "ProtocolResult",
    "compute_ap",
    "compute_map",
    "evaluate",
    "format_results",
    "load_gnd",
    "protocol_gnd",
]

PROTOCOLS = ("easy", "medium", "hard")
_SHORT = {"easy": "E", "medium": "M", "hard": "H"}


def _per_query(gnd: Any) -> list[Mapping[str, Any]]:
    """The per-query list from a loaded gnd dict, or the list itself."""
    if isinstance(gnd, Mapping):
        if "gnd" not in gnd:
            raise InputError("gnd: a dict must be a revisitop ground truth with a 'gnd' key")
        gnd = gnd["gnd"]
    if not isinstance(gnd, Sequence) or isinstance(gnd, (str, bytes)):
        raise InputError(f"gnd: expected a list of per-query dicts, got {type(gnd).__name__}")
    if len(gnd) == 0:
        raise InputError("gnd: no queries")
    return list(gnd)


def _ids(v: Any, where: str) -> np.ndarray:
    a = as_numpy(v, where)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{where}: expected a 1-D list of integer image indices")
    if a.min() < 0:
        raise InputError(f"{where}: image indices must be >= 0, found {a.min()}")
    return a.astype(np.int64)


def protocol_gnd(gnd: Any, protocol: str) -> list[dict[str, np.ndarray]]:
    """Per-query ``{"ok", "junk"}`` sets of one protocol (revisitop ``example_evaluate.py``).

    easy: ok = easy, junk = junk + hard; medium: ok = easy + hard, junk = junk;
    hard: ok = hard, junk = junk + easy.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    out = []
    for i, g in enumerate(_per_query(gnd)):
        try:
            easy, hard, junk = (_ids(g[k], f"gnd[{i}][{k!r}]") for k in ("easy", "hard", "junk"))
        except KeyError as e:
            raise InputError(f"gnd[{i}]: missing key {e.args[0]!r}") from None
        if protocol == "easy":
            out.append({"ok": easy, "junk": np.concatenate([junk, hard])})
        elif protocol == "medium":
            out.append({"ok": np.concatenate([easy, hard]), "junk": junk})
        else:
            out.append({"ok": hard, "junk": np.concatenate([junk, easy])})
    return out


# --------------------------------------------------------------------------- metrics


def compute_ap(positions: np.ndarray, n_ok: int) -> float:
    """Trapezoidal AP from the sorted 0-based (junk-shifted) positions of the positives."""
    r = np.asarray(positions, dtype=np.int64)
    if r.size == 0:
        return 0.0
    j = np.arange(r.size, dtype=np.float64)
    rf = r.astype(np.float64)
    p0 = np.divide(j, rf, out=np.ones_like(j), where=r != 0)
    p1 = (j + 1.0) / (rf + 1.0)
    step = 1.0 / n_ok
    # Sequential sum of the same terms as the reference loop, for identical floats.
    return float(np.cumsum((p0 + p1) * step / 2.0)[-1])


def _check_ranks(ranks: Any, n_query: int, where: str = "ranks") -> np.ndarray:
    r = as_numpy(ranks, where)
    if r.ndim != 2:
        raise InputError(f"{where}: expected a 2-D (n_db, n_query) array, got shape {r.shape}")
    if not np.issubdtype(r.dtype, np.integer):
        raise InputError(f"{where}: must hold integer database indices, got dtype {r.dtype}")
    if r.shape[1] != n_query:
        hint = " (it looks transposed: expected (n_db, n_query))" if r.shape[0] == n_query else ""
        raise InputError(f"{where}: has {r.shape[1]} columns for {n_query} queries{hint}")
    if r.shape[0] == 0:
        raise InputError(f"{where}: empty ranking (0 rows)")
    if r.min() < 0:
        raise InputError(f"{where}: database indices must be >= 0, found {r.min()}")
    return r


def _has_duplicates(col: np.ndarray) -> bool:
    """A repeated index would count a positive twice (AP > 1): refuse it, cheaply."""
    if int(col.max()) < 4 * col.size + 1024:
        return bool(np.bincount(col).max() > 1)
    return bool(np.unique(col).size != col.size)


def compute_map(
    ranks: Any, gnd: Sequence[Mapping[str, Any]], kappas: Sequence[int] = (1, 5, 10)
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop's ``compute_map``: returns ``(mAP, aps, mean P@kappas, per-query P@kappas)``.

    ``gnd`` is a list of dicts with ``"ok"`` and optional ``"junk"`` index lists. Queries with
    an empty ``ok`` set get NaN in ``aps``/``prs`` and are excluded from the means. Rankings may
    be truncated (shortlists): missing positives add nothing to AP but still count in ``n_ok``;
    if none is ranked at all, P@k is 0 (the reference crashes there).
    """
    gl = _per_query(gnd)
    r = _check_ranks(ranks, len(gl))
    ks = [int(k) for k in kappas]
    if any(k < 1 for k in ks):
        raise InputError(f"kappas must be >= 1, got {list(kappas)}")
    nq = len(gl)
    aps = np.zeros(nq)
    pr = np.zeros(len(ks))
    prs = np.zeros((nq, len(ks)))
    total, nempty = 0.0, 0
    for i, g in enumerate(gl):
        if "ok" not in g:
            raise InputError(f"gnd[{i}]: missing key 'ok'")
        ok = _ids(g["ok"], f"gnd[{i}]['ok']")
        if ok.size == 0:
            aps[i] = math.nan
            prs[i, :] = math.nan
            nempty += 1
            continue
        junk = _ids(g.get("junk", []), f"gnd[{i}]['junk']")
        col = r[:, i]
        if _has_duplicates(col):
            raise InputError(f"ranks[:, {i}]: a database index appears twice in the ranking")
        pos = np.flatnonzero(np.isin(col, ok))
        if junk.size:
            jpos = np.flatnonzero(np.isin(col, junk))
            pos = pos - np.searchsorted(jpos, pos, side="left")  # junk ranked strictly above
        ap = compute_ap(pos, ok.size)
        total = total + ap
        aps[i] = ap
        pos1 = pos + 1
        for j, k in enumerate(ks):
            if pos1.size == 0:
                prs[i, j] = 0.0
                continue
            kq = min(int(pos1.max()), k)
            prs[i, j] = (pos1 <= kq).sum() / kq
        pr = pr + prs[i, :]
    if nempty == nq:
        raise InputError("compute_map: no query has a positive image; mAP is undefined")
    return total / (nq - nempty), aps, pr / (nq - nempty), prs


@dataclass(frozen=True, eq=False)
class ProtocolResult:
    """One protocol's scores. ``map``/``mp_at_k`` in percent, rounded to 2 decimals as revisitop prints."""

    map: float
    mp_at_k: dict[int, float]
    map_raw: float
    aps: np.ndarray = field(repr=False)
    prs: np.ndarray = field(repr=False)
    empty_queries: tuple[int, ...] = ()

    @property
    def n_evaluated(self) -> int:
        return int(self.aps.shape[0] - len(self.empty_queries))


def evaluate(
    ranks: Any,
    gnd: Any,
    protocols: Sequence[str] = PROTOCOLS,
    kappas: Sequence[int] = (1, 5, 10),
) -> dict[str, ProtocolResult]:
    """mAP and mP@k per protocol from a revisitop ground truth.

    ``ranks`` is one ``(n_db, n_query)`` matrix for all protocols, or a mapping protocol -> matrix
    (CVNet/DELG-style reranking builds one shortlist per protocol). Distractors (R1M) are simply
    further database indices after the real images.
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    if not protocols:
        raise InputError("protocols: none given")
    out: dict[str, ProtocolResult] = {}
    for proto in protocols:
        if isinstance(ranks, Mapping):
            if proto not in ranks:
                raise InputError(f"ranks: no rank matrix for protocol {proto!r} (have {sorted(ranks)})")
            rk = ranks[proto]
        else:
            rk = ranks
        pg = protocol_gnd(gnd, proto)
        m, aps, pr, prs = compute_map(rk, pg, kappas)
        out[proto] = ProtocolResult(
            map=float(np.around(m * 100, decimals=2)),
            mp_at_k={int(k): float(v) for k, v in zip(kappas, np.around(pr * 100, decimals=2))},
            map_raw=float(m),
            aps=aps,
            prs=prs,
            empty_queries=tuple(int(i) for i in np.flatnonzero(np.isnan(aps))),
        )
    return out


def format_results(results: Mapping[str, ProtocolResult], dataset: str = "") -> str:
    """Two lines in revisitop's print format: mAP per protocol, then mP@k per protocol."""
    name = f">> {dataset}: " if dataset else ">> "
    maps = ", ".join(f"{_SHORT.get(p, p)}: {r.map}" for p, r in results.items())
    ks = next(iter(results.values())).mp_at_k.keys() if results else []
    mps = ", ".join(f"{_SHORT.get(p, p)}: {list(r.mp_at_k.values())}" for p, r in results.items())
    return f"{name}mAP {maps}\n{name}mP@k{list(ks)} {mps}"
