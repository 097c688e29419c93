"""Hand-computed cases, one per quirk of the hashing protocols."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.codes import pack
from bitseek.errors import InputError
from bitseek.eval import map_at_k, map_at_k_ranked, map_at_topk, precision_at_k, precision_recall

# 8-bit codes: a query and database items at chosen Hamming distances from it.
Q = np.ones((1, 8), dtype=np.float32)


def at_distance(*ds: int) -> np.ndarray:
    """One database row per distance d: the query with its first d bits flipped."""
    rows = np.ones((len(ds), 8), dtype=np.float32)
    for i, d in enumerate(ds):
        rows[i, :d] = -1
    return rows


def test_one_hit_at_rank_one_gives_one_fifth_at_k5():
    db = at_distance(0, 3, 3, 4, 5, 6)
    ql, dl = np.array([1]), np.array([1, 0, 0, 0, 0, 0])
    assert map_at_k(Q, db, ql, dl, ks=[5]) == {5: pytest.approx(0.2, abs=0)}


def test_divide_by_k_versus_divide_by_hits():
    db = at_distance(0, 1, 2, 3, 4, 5)
    ql, dl = np.array([1]), np.array([1, 1, 0, 0, 0, 0])
    # video protocol: (1/1 + 2/2) / K
    assert map_at_k(Q, db, ql, dl, ks=[5, 2]) == {5: 0.4, 2: 1.0}
    # DeepHash CalcTopMap: mean over the hits in the top-k
    assert map_at_topk(Q, db, ql, dl, topk=5) == 1.0
    # hits at ranks 2 and 4: video = (1/2 + 2/4)/4, DeepHash = (1/2 + 2/4)/2
    dl2 = np.array([0, 1, 0, 1, 0, 0])
    assert map_at_k(Q, db, ql, dl2, ks=[4])[4] == pytest.approx(0.25)
    assert map_at_topk(Q, db, ql, dl2, topk=4) == pytest.approx(0.5)


def test_self_match_counts_when_queries_are_the_database():
    codes = at_distance(0, 4, 5, 6, 7, 8)
    labels = np.array([7, 1, 2, 3, 4, 5])  # every item is alone in its class
    maps, aps = map_at_k(codes, None, labels, ks=[5], per_query=True)
    np.testing.assert_array_equal(aps[5], np.full(6, 0.2))  # only the item itself is relevant
    assert maps[5] == pytest.approx(0.2)


def test_queries_without_hits_count_as_zero_in_both_protocols():
    db = at_distance(0, 1, 2)
    q = np.concatenate([Q, Q])
    ql, dl = np.array([1, 9]), np.array([1, 0, 0])  # query 2 has no relevant item
    assert map_at_k(q, db, ql, dl, ks=[1])[1] == 0.5
    m, ap = map_at_topk(q, db, ql, dl, topk=None, per_query=True)
    assert m == 0.5 and ap.tolist() == [1.0, 0.0]


def test_ternary_codes_give_half_integer_distances():
    q = np.array([[1, 0]], dtype=np.float32)
    db = np.array([[-1, -1], [0, 0], [1, -1]], dtype=np.float32)  # distances 1.5, 1.0, 0.5
    dl = np.array([0, 1, 0])
    # top-1 is item 2 (0.5), then item 1 (1.0): one hit at rank 2
    assert map_at_k(q, db, np.array([1]), dl, ks=[2])[2] == pytest.approx(0.25)
    # packing would map the zeros to -1 and change the ranking: item 2 at 0, items 0 and 1 tie at 1
    assert map_at_k(pack(np.pad(q, ((0, 0), (0, 6)), constant_values=1)),
                    pack(np.pad(db, ((0, 0), (0, 6)), constant_values=1)),
                    np.array([1]), dl, ks=[2])[2] == pytest.approx(0.0)
    pr = precision_recall(q, db, np.array([1]), dl)
    assert pr.radius.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    np.testing.assert_allclose(pr.precision, [np.nan, 0.0, 0.5, 1 / 3, 1 / 3], equal_nan=True)
    np.testing.assert_allclose(pr.recall, [0, 0, 1, 1, 1])


def test_stable_ties_follow_database_index_at_the_kth_boundary():
    # 4 items tied at distance 1 around the K=3 boundary: stable takes indices 1, 2 after item 5
    db = at_distance(2, 1, 1, 3, 1, 0, 1)
    dl = np.array([0, 0, 1, 0, 1, 1, 1])
    maps, aps = map_at_k(Q, db, np.array([1]), dl, ks=[3], per_query=True)
    # ranking: 5 (d0, rel), 1 (d1), 2 (d1, rel) -> (1/1 + 2/3) / 3
    assert aps[3][0] == pytest.approx((1 + 2 / 3) / 3)
    assert precision_at_k(Q, db, np.array([1]), dl, ks=[1, 3]) == {1: 1.0, 3: pytest.approx(2 / 3)}


def test_tie_orders_differ_between_stable_and_numpy():
    rng = np.random.default_rng(3)
    n = 200
    db = at_distance(*rng.integers(0, 2, n))  # only two distinct distances: massive ties
    dl = rng.integers(0, 2, n)
    dist = (0.5 * (8 - (db @ Q.T)[:, 0])).astype(np.float32)
    order_np, order_st = np.argsort(dist), np.argsort(dist, kind="stable")
    assert (order_np != order_st).any(), "precondition: numpy's default sort scrambles ties here"
    ks = [10, 50]
    got_np = map_at_k(Q, db, np.array([1]), dl, ks=ks, ties="numpy")
    got_st = map_at_k(Q, db, np.array([1]), dl, ks=ks, ties="stable")
    for order, got in ((order_np, got_np), (order_st, got_st)):
        for k in ks:
            rel = dl[order][:k]
            assert got[k] == pytest.approx(np.sum(np.cumsum(rel) / np.arange(1, k + 1) * rel) / k)
    assert got_np != got_st


def test_multi_hot_relevance_is_any_shared_label():
    db = at_distance(0, 1, 2)
    ql = np.array([[1, 0, 1]])
    dl = np.array([[0, 1, 0], [0, 0, 1], [1, 1, 1]])
    assert precision_at_k(Q, db, ql, dl, ks=[1, 2, 3]) == {1: 0.0, 2: 0.5, 3: pytest.approx(2 / 3)}


def test_packed_and_float_codes_agree():
    rng = np.random.default_rng(0)
    q = np.sign(rng.standard_normal((30, 24))).astype(np.float32)
    d = np.sign(rng.standard_normal((90, 24))).astype(np.float32)
    ql, dl = rng.integers(0, 5, 30), rng.integers(0, 5, 90)
    for ties in ("stable", "numpy"):
        a = map_at_k(q, d, ql, dl, ks=[5, 50], ties=ties)
        b = map_at_k(pack(q), pack(d), ql, dl, ks=[5, 50], ties=ties)
        c = map_at_k(pack(q), d, ql, dl, ks=[5, 50], ties=ties)  # mixed: packed side unpacked
        assert a == b == c


def test_pr_curve_micro_and_macro_on_a_small_case():
    q = np.concatenate([Q, Q])
    db = at_distance(0, 1, 8)
    ql, dl = np.array([1, 2]), np.array([1, 2, 1])
    micro = precision_recall(q, db, ql, dl)
    assert micro.radius.tolist() == list(range(9))
    # radius 0: both queries retrieve item 0 (rel to q0 only) -> P = 1/2, R = 1/(2+1)
    assert micro.precision[0] == 0.5 and micro.recall[0] == pytest.approx(1 / 3)
    # radius 1..7: items 0, 1 for both: 2 good pairs of 4; radius 8: all, 3 of 6
    assert micro.precision[1:8].tolist() == [0.5] * 7 and micro.precision[8] == 0.5
    assert micro.recall[8] == 1.0
    macro = precision_recall(q, db, ql, dl, average="macro")
    assert macro.recall[0] == pytest.approx((1 / 2 + 0) / 2)
    p, r = macro[0], macro[1]  # unpacks as (precision, recall) for plotting
    assert p is macro.precision and r is macro.recall


def test_map_at_topk_none_and_zero_mean_whole_database():
    rng = np.random.default_rng(1)
    q = np.sign(rng.standard_normal((5, 16)))
    d = np.sign(rng.standard_normal((40, 16)))
    ql, dl = rng.integers(0, 3, 5), rng.integers(0, 3, 40)
    assert map_at_topk(q, d, ql, dl, None) == map_at_topk(q, d, ql, dl, 0) == map_at_topk(q, d, ql, dl, 40)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(2)
    q = np.sign(rng.standard_normal((37, 16)))
    ql = rng.integers(0, 4, 37)
    for ties in ("stable", "numpy"):
        ref = map_at_k(q, None, ql, ks=[3, 10], ties=ties, chunk_size=1000)
        assert map_at_k(q, None, ql, ks=[3, 10], ties=ties, chunk_size=4) == ref


# --------------------------------------------------------------------------- map_at_k_ranked


def _stable_hamming_ranking(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    dist = 0.5 * (q.shape[1] - q @ db.T)
    return np.argsort(dist, axis=1, kind="stable")


@pytest.mark.parametrize("labels", ["multi", "class"])
def test_map_at_k_ranked_equals_map_at_k_on_the_hamming_ranking(labels: str) -> None:
    rng = np.random.default_rng(3)
    q = np.where(rng.random((40, 16)) < 0.5, -1.0, 1.0)
    db = np.where(rng.random((90, 16)) < 0.5, -1.0, 1.0)
    if labels == "multi":
        ql, dl = (rng.random((40, 6)) < 0.3).astype(int), (rng.random((90, 6)) < 0.3).astype(int)
    else:
        ql, dl = rng.integers(0, 5, 40), rng.integers(0, 5, 90)
    ks = (1, 5, 20, 90)
    want = map_at_k(q, db, ql, dl, ks, ties="stable")
    got = map_at_k_ranked(_stable_hamming_ranking(q, db), ql, dl, ks)
    assert got == want


def test_map_at_k_ranked_all_vs_all_and_truncated_rankings() -> None:
    rng = np.random.default_rng(4)
    q = np.where(rng.random((30, 8)) < 0.5, -1.0, 1.0)
    ql = (rng.random((30, 4)) < 0.4).astype(int)
    full = _stable_hamming_ranking(q, q)
    assert map_at_k_ranked(full[:, :10], ql, None, (5, 10)) == map_at_k(q, None, ql, None, (5, 10), ties="stable")


def test_map_at_k_ranked_rejects_bad_rankings() -> None:
    ql, dl = np.eye(3, dtype=int), np.eye(3, dtype=int)
    with pytest.raises(InputError, match="repeats"):
        map_at_k_ranked(np.array([[0, 0], [1, 2], [2, 1]]), ql, dl, (1, 2))
    with pytest.raises(InputError, match="outside"):
        map_at_k_ranked(np.array([[0, 3], [1, 2], [2, 1]]), ql, dl, (1, 2))
    with pytest.raises(InputError, match="there are 2 queries"):
        map_at_k_ranked(np.array([[0, 1], [1, 2]]), ql, dl, (1,))
    with pytest.raises(InputError, match="integer"):
        map_at_k_ranked(np.array([[0.0, 1.0]] * 3), ql, dl, (1,))


def test_map_at_topk_above_the_database_slices_like_the_reference_and_warns(caplog):
    """DeepHash slices ``[0:topk]``: mAP@5000 on a smaller database is its mAP@all (it used to raise)."""
    import logging

    from bitseek.eval import map_at_topk

    rng = np.random.default_rng(0)
    q = np.sign(rng.standard_normal((6, 16))).astype(np.float32)
    d = np.sign(rng.standard_normal((40, 16))).astype(np.float32)
    ql, dl = rng.integers(0, 3, 6), rng.integers(0, 3, 40)
    with caplog.at_level(logging.WARNING, logger="bitseek.eval.hashing"):
        got = map_at_topk(q, d, ql, dl, topk=5000)
    assert got == map_at_topk(q, d, ql, dl, topk=None)
    assert "topk=5000 is larger than the database (40 items)" in caplog.text
