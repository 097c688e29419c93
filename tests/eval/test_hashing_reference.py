"""Seeded random cases against literal ports of the reference code (tests/eval/reference_ports.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitseek.codes import pack
from bitseek.eval import map_at_k, map_at_topk, precision_at_k, precision_recall


def make_case(seed: int, nq: int, nd: int, bits: int, n_labels: int, zeros: float, multi: bool):
    """Clustered codes (many ties, many hits) with optional exact zeros (ternary codes)."""
    rng = np.random.default_rng(seed)
    centres = np.sign(rng.standard_normal((n_labels, bits)))
    cq, cd = rng.integers(0, n_labels, nq), rng.integers(0, n_labels, nd)

    def codes(c):
        x = centres[c] * np.where(rng.random((len(c), bits)) < 0.2, -1, 1)
        x[rng.random(x.shape) < zeros] = 0
        return x.astype(np.float32)

    def labels(c):
        if not multi:
            return c
        m = np.zeros((len(c), n_labels), dtype=np.uint8)
        m[np.arange(len(c)), c] = 1
        m[rng.random(m.shape) < 0.05] = 1
        return m

    return codes(cq), codes(cd), labels(cq), labels(cd)


def onehot(labels, n):
    if labels.ndim == 2:
        return labels.astype(np.float64)
    return np.eye(n)[labels]


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.sampled_from([8, 16, 32]),
    zeros=st.sampled_from([0.0, 0.1]),
    multi=st.booleans(),
    same=st.booleans(),
)
def test_map_at_k_numpy_ties_equal_reference_bit_for_bit(ref, seed, bits, zeros, multi, same):
    q, d, ql, dl = make_case(seed, 40, 150, bits, 6, zeros, multi)
    if same:
        d, dl = q, ql
    ks = [1, 5, 10, 20, 40]
    got = map_at_k(q, None if same else d, ql, None if same else dl, ks=ks, ties="numpy", chunk_size=13)
    exp = ref.video_map(d, q, onehot(dl, 6), onehot(ql, 6), ks)
    assert got == {k: float(exp[k]) for k in ks}  # exact equality, not approx


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), bits=st.sampled_from([8, 24]), zeros=st.sampled_from([0.0, 0.1]))
def test_map_at_k_stable_ties_equal_reference_with_stable_sort(ref, seed, bits, zeros):
    q, d, ql, dl = make_case(seed, 30, 120, bits, 5, zeros, multi=True)
    ks = [3, 7, 30, 120]
    got = map_at_k(q, d, ql, dl, ks=ks, ties="stable", chunk_size=7)
    exp = ref.video_map(d, q, onehot(dl, 5), onehot(ql, 5), ks, kind="stable")
    assert got == {k: float(exp[k]) for k in ks}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("topk", [None, 1, 17, 100])
def test_map_at_topk_matches_calc_top_map(ref, seed, topk):
    q, d, ql, dl = make_case(seed, 25, 100, 16, 4, 0.0, multi=bool(seed % 2))
    qL, dL = onehot(ql, 4), onehot(dl, 4)
    for ties, kind in (("numpy", None), ("stable", "stable")):
        got = map_at_topk(q, d, ql, dl, topk, ties=ties, chunk_size=9)
        exp = ref.calc_top_map(d, q, dL, qL, 100 if topk is None else topk, kind=kind)
        assert got == pytest.approx(exp, rel=1e-12, abs=1e-15)


def test_map_at_topk_minus_one_slice_is_reproducible_with_n_minus_one(ref):
    q, d, ql, dl = make_case(7, 20, 60, 16, 3, 0.0, multi=False)
    exp = ref.calc_top_map(d, q, onehot(dl, 3), onehot(ql, 3), -1)  # DeepHash's "all"
    assert map_at_topk(q, d, ql, dl, 59, ties="numpy") == pytest.approx(exp, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_precision_at_k_against_a_loop(seed):
    q, d, ql, dl = make_case(seed, 20, 80, 16, 4, 0.05, multi=False)
    dist = 0.5 * (16 - q @ d.T)
    got = precision_at_k(q, d, ql, dl, ks=[1, 8, 80])
    for k in (1, 8, 80):
        exp = np.mean([np.mean(dl[np.argsort(dist[i], kind="stable")[:k]] == ql[i]) for i in range(20)])
        assert got[k] == pytest.approx(exp)


@pytest.mark.parametrize("zeros", [0.0, 0.1])
def test_precision_recall_matches_pooled_reference(ref, zeros):
    q, d, ql, dl = make_case(11, 30, 90, 16, 5, zeros, multi=True)
    dist = 0.5 * (16 - q @ d.T)
    rel = (ql.astype(np.float64) @ dl.T.astype(np.float64)) > 0
    got = precision_recall(q, d, ql, dl, chunk_size=8)
    p, r = ref.recall_precision_pooled(dist, rel, got.radius)
    np.testing.assert_allclose(got.precision, p, equal_nan=True)
    np.testing.assert_allclose(got.recall, r)
    # macro average against a per-query loop
    mac = precision_recall(q, d, ql, dl, average="macro")
    for i, rad in enumerate(mac.radius):
        inside = dist <= rad
        has = inside.sum(1) > 0
        pq = (inside & rel).sum(1)[has] / inside.sum(1)[has]
        assert (np.isnan(mac.precision[i]) and not has.any()) or mac.precision[i] == pytest.approx(pq.mean())
        relq = rel.sum(1) > 0
        assert mac.recall[i] == pytest.approx(((inside & rel).sum(1)[relq] / rel.sum(1)[relq]).mean())


def test_packed_codes_with_many_bits_use_several_words(ref):
    q, d, ql, dl = make_case(5, 20, 70, 136, 4, 0.0, multi=False)  # 17 bytes -> 3 words
    ks = [5, 20]
    exp = ref.video_map(d, q, onehot(dl, 4), onehot(ql, 4), ks, kind="stable")
    assert map_at_k(pack(q), pack(d), ql, dl, ks=ks) == {k: float(exp[k]) for k in ks}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("topk", [None, 3, 50])
def test_rank_pr_curve_matches_calc_top_map_with_pr_bit_for_bit(ref, seed, topk):
    """DeepHash's rank-based PR (CalcTopMapWithPR + validate's sampling), exact under ties='numpy'."""
    from bitseek.eval import deephash_pr_ranks, precision_recall_at_ranks

    q, d, ql, dl = make_case(seed, 30, 340, 16, 6, 0.0, multi=bool(seed % 2))
    qL, dL = onehot(ql, 6), onehot(dl, 6)
    ref_p, ref_r = ref.calc_top_map_with_pr(q, qL, d, dL, 340 if topk is None else topk)
    index = np.asarray(ref.deephash_validate_index(340))
    np.testing.assert_array_equal(deephash_pr_ranks(340) - 1, index)
    got = precision_recall_at_ranks(q, d, ql, dl, topk=topk, ties="numpy", chunk_size=7)
    assert got.precision.tolist() == ref_p[index].tolist()
    assert got.recall.tolist() == ref_r[index].tolist()
    assert got.n_queries <= 30


def test_rank_pr_differs_from_the_hamming_ball_curve_and_recall_at_k_is_its_recall():
    from bitseek.eval import precision_recall_at_ranks, recall_at_k

    q, d, ql, dl = make_case(5, 20, 120, 16, 4, 0.0, multi=False)
    c = precision_recall_at_ranks(q, d, ql, dl, ranks=[1, 10, 120])
    assert c.recall[-1] == 1.0  # every relevant item is retrieved at the last rank
    r = recall_at_k(q, d, ql, dl, ks=[1, 10, 120])
    assert list(r.values()) == c.recall.tolist()
    dist = 0.5 * (16 - q @ d.T)
    order = np.argsort(dist, axis=1, kind="stable")
    rel = dl[order] == ql[:, None]
    has = rel.any(1)
    assert r[10] == pytest.approx(np.mean(rel[has, :10].sum(1) / rel[has].sum(1)))
