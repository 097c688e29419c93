"""Shortlist modes, fusion and write-back against a straight loop of the official CVNet test rule."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.errors import ConfigError, InputError
from bitseek.eval.revisited import evaluate
from bitseek.rerank import (
    SHORTLIST_MODES,
    Reranked,
    Reranker,
    ScoringReranker,
    fuse,
    ranked_scores,
    rerank_ranks,
    shortlists,
    write_back,
)


class TableReranker(ScoringReranker):
    """Scores from a fixed (n_db, n_query) table; counts the pairs it was asked for."""

    name = "table"

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.calls: list[tuple[int, np.ndarray]] = []

    def score(self, query: int, candidates: np.ndarray) -> np.ndarray:
        self.calls.append((query, candidates.copy()))
        return self.table[candidates, query]


def reference_rerank(ranks, sim, local, gnd, topk, mix=0.5):
    """The official test's loop, re-stated: per protocol walk down the ranking, skip ignored images,
    take the first topk, sort them by sim + mix * local and write them back into their positions."""
    ignore = {"easy": lambda g: set(g["junk"]) | set(g["hard"]),
              "medium": lambda g: set(g["junk"]),
              "hard": lambda g: set(g["junk"]) | set(g["easy"])}
    out = {}
    for proto, ign in ignore.items():
        rk = ranks.copy()
        for i in range(ranks.shape[1]):
            skip = ign(gnd[i])
            pos, ids = [], []
            for j in range(ranks.shape[0]):
                if len(pos) >= topk:
                    break
                if ranks[j, i] in skip:
                    continue
                pos.append(j)
                ids.append(ranks[j, i])
            ids = np.asarray(ids)
            mixed = sim[ids, i] + mix * local[ids, i]
            rk[pos, i] = ids[np.argsort(-mixed, kind="stable")]
        out[proto] = rk
    return out


def _problem(seed=0, n=60, nq=5):
    rng = np.random.default_rng(seed)
    sim = rng.standard_normal((n, nq))
    local = rng.random((n, nq))
    ranks = np.argsort(-sim, axis=0)
    gnd = []
    for _ in range(nq):
        perm = rng.permutation(n)
        gnd.append({"easy": perm[:6], "hard": perm[6:12], "junk": perm[12:16]})
    return sim, local, ranks, gnd


@pytest.mark.parametrize("k", [1, 7, 20, 60, 100])
def test_gnd_mode_equals_the_official_rule(k):
    sim, local, ranks, gnd = _problem()
    res = rerank_ranks(ranks, ranked_scores(sim, ranks), TableReranker(local), mode="gnd", k=k, gnd=gnd)
    ref = reference_rerank(ranks, sim, local, gnd, k)
    for p in ("easy", "medium", "hard"):
        np.testing.assert_array_equal(res.ranks[p], ref[p])
    assert res.mode == "gnd" and "junk skipped" in res.describe() and res.k == k
    assert res.to_json()["shortlist_mode"] == "gnd"


def test_gnd_mode_differs_per_protocol_and_skipped_entries_stay():
    sim, local, ranks, gnd = _problem(1)
    res = rerank_ranks(ranks, ranked_scores(sim, ranks), TableReranker(local), mode="gnd", k=10, gnd=gnd)
    assert not np.array_equal(res.ranks["easy"], res.ranks["hard"])
    for i, g in enumerate(gnd):
        ignored = np.isin(ranks[:, i], np.concatenate([g["junk"], g["hard"]]))
        np.testing.assert_array_equal(res.ranks["easy"][ignored, i], ranks[ignored, i])


def test_plain_mode_uses_no_ground_truth_and_leaves_the_tail():
    sim, local, ranks, gnd = _problem(2)
    rr = TableReranker(local)
    res = rerank_ranks(ranks, ranked_scores(sim, ranks), rr, mode="plain", k=10)
    assert res.ranks["easy"] is res.ranks["hard"]
    out = res.ranks["medium"]
    np.testing.assert_array_equal(out[10:], ranks[10:])
    for i in range(ranks.shape[1]):
        top = ranks[:10, i]
        want = top[np.argsort(-(sim[top, i] + 0.5 * local[top, i]), kind="stable")]
        np.testing.assert_array_equal(out[:10, i], want)
    assert len(rr.calls) == ranks.shape[1] and res.n_pairs == 10 * ranks.shape[1]
    assert res.describe().endswith(SHORTLIST_MODES["plain"])
    evaluate(res.ranks, {"gnd": gnd})  # evaluator takes the per-protocol mapping


def test_union_of_protocol_shortlists_is_scored_once():
    sim, local, ranks, gnd = _problem(3)
    rr = TableReranker(local)
    rerank_ranks(ranks, ranked_scores(sim, ranks), rr, mode="gnd", k=15, gnd=gnd)
    assert len(rr.calls) == ranks.shape[1]
    for _, cands in rr.calls:
        assert np.unique(cands).size == cands.size


def test_rerank_improves_map_when_scores_are_right():
    sim, _, ranks, gnd = _problem(4)
    oracle = np.zeros_like(sim)
    for i, g in enumerate(gnd):
        oracle[g["easy"], i] = oracle[g["hard"], i] = 100.0
    before = evaluate(ranks, gnd)["medium"].map
    after = evaluate(rerank_ranks(ranks, ranked_scores(sim, ranks), TableReranker(oracle), mode="gnd",
                                  k=60, gnd=gnd).ranks, gnd)["medium"].map
    assert after == 100.0 and before < 100.0


def test_fuse_is_global_plus_half_score_and_stable():
    ids, sim = np.array([4, 2, 9]), np.array([0.75, 0.5, 0.25])
    r = fuse(ids, sim, np.array([0.0, 0.5, 1.0]))  # all fuse to 0.75 exactly: first-stage order kept
    np.testing.assert_array_equal(r.ranking, [4, 2, 9])
    r = fuse(ids, sim, np.array([0.0, 0.6, 1.2]))
    np.testing.assert_array_equal(r.ranking, [9, 2, 4])
    np.testing.assert_allclose(r.scores, [0.85, 0.8, 0.75])
    r = fuse(ids, sim, np.array([1.0, 1.0, 1.0]), weight=0.0)
    np.testing.assert_array_equal(r.ranking, ids)


def test_write_back_refuses_foreign_entries():
    col = np.array([5, 3, 1, 0])
    np.testing.assert_array_equal(write_back(col, np.array([0, 2]), np.array([1, 5])), [1, 3, 5, 0])
    with pytest.raises(InputError):
        write_back(col, np.array([0, 2]), np.array([1, 4]))


def test_bad_arguments_are_named():
    sim, local, ranks, gnd = _problem()
    sc = ranked_scores(sim, ranks)
    with pytest.raises(ConfigError, match="needs the ground truth"):
        rerank_ranks(ranks, sc, TableReranker(local), mode="gnd")
    with pytest.raises(ConfigError, match="shortlist mode"):
        rerank_ranks(ranks, sc, TableReranker(local), mode="topk")
    with pytest.raises(ConfigError, match="positive"):
        shortlists(ranks, 0)
    with pytest.raises(InputError, match="rank-aligned"):
        rerank_ranks(ranks, sim[:10], TableReranker(local), mode="plain")
    with pytest.raises(InputError, match="ground truth has"):
        rerank_ranks(ranks, sc, TableReranker(local), mode="gnd", gnd=gnd[:2])


def test_a_custom_reranker_only_needs_rerank():
    class Reverse(Reranker):
        name = "reverse"

        def rerank(self, query, ranking, similarity):
            return Reranked(ranking[::-1].copy(), np.arange(ranking.size, dtype=float)[::-1])

    sim, _, ranks, _ = _problem()
    res = rerank_ranks(ranks, ranked_scores(sim, ranks), Reverse(), mode="plain", k=5)
    np.testing.assert_array_equal(res.ranks["easy"][:5], ranks[:5][::-1])
    assert res.reranker == "reverse"
