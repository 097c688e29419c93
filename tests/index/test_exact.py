"""Exact backends against the brute-force reference, with many ties (few bits, repeated codes)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bitseek.codes import unpack
from bitseek.index import PAD_HAMMING, make_index
from bitseek.index.selection import topk_largest

SETTINGS = settings(max_examples=40, deadline=None)


def _scenario(seed: int, bits: int, n_distinct: int, steps: int):
    """Random adds/removes over a small palette of codes, so distances tie a lot."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (n_distinct, bits // 8), dtype=np.uint8)
    next_id, alive, ops = 0, [], []
    for _ in range(steps):
        if alive and rng.random() < 0.3:
            gone = rng.choice(alive, size=int(rng.integers(1, len(alive) + 1)), replace=False)
            alive = [i for i in alive if i not in set(gone.tolist())]
            ops.append(("remove", gone))
        else:
            m = int(rng.integers(0, 30))
            ids = next_id + rng.permutation(m) * 2  # ids are not positions: shuffled and gapped
            next_id += 2 * m + 1
            ops.append(("add", palette[rng.integers(0, n_distinct, m)], ids))
            alive += ids.tolist()
    queries = np.concatenate([palette[rng.integers(0, n_distinct, 4)], rng.integers(0, 256, (4, bits // 8), dtype=np.uint8)])
    return ops, queries


def _apply(ops, index, ref):
    for op in ops:
        if op[0] == "add":
            index.add(op[1], op[2])
            ref.add(op[1], op[2])
        else:
            assert index.remove(op[1]) == len(op[1])
            ref.remove(op[1])


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.sampled_from([8, 16, 24, 64]),
    n_distinct=st.integers(1, 10),
    steps=st.integers(1, 6),
    k=st.integers(1, 60),
    radius=st.integers(0, 20),
)
def test_flat_topk_and_range_equal_bruteforce(brute, seed, bits, n_distinct, steps, k, radius):
    ops, q = _scenario(seed, bits, n_distinct, steps)
    index, ref = make_index("flat", bits=bits), brute("hamming")
    _apply(ops, index, ref)
    d, i = index.search(q, k)
    rd, ri = ref.search(q, k)
    assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == i.shape == (len(q), k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd.astype(np.int64))
    assert (d[i == -1] == PAD_HAMMING).all()
    res = index.range_search(q, radius)
    for (dist, ids), (rids, rdist) in zip(res, ref.range(q, radius)):
        assert ids.tolist() == rids
        assert dist.tolist() == rdist


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), bits=st.sampled_from([8, 16, 32]), k=st.integers(1, 20))
def test_signed_codes_are_packed_like_bitseek_codes(brute, seed, bits, k):
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (50, bits // 8), dtype=np.uint8)
    signed = unpack(packed)
    signed[rng.random(signed.shape) < 0.1] = 0.0  # exact zeros pack as bit 0, like -1
    a, b = make_index("flat", bits=bits), make_index("flat", bits=bits)
    a.add(signed, np.arange(50))
    b.add(np.packbits(signed > 0, axis=1), np.arange(50))
    qs = unpack(packed[:5])
    for x, y in zip(a.search(qs, k), b.search(np.packbits(qs > 0, axis=1), k)):
        np.testing.assert_array_equal(x, y)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    n=st.integers(0, 120),
    k=st.integers(1, 130),
    removes=st.integers(0, 30),
    threshold=st.integers(-4, 6),
)
def test_float_ip_equals_bruteforce_with_ties(brute, seed, dim, n, k, removes, threshold):
    # small integer entries: every product is exact in float32, so the reference is bit-exact too
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (n, dim)).astype(np.float32)
    ids = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    index, ref = make_index("float-ip", dim=dim), brute("ip")
    index.add(x, ids)
    ref.add(x, ids)
    if n:
        gone = rng.choice(ids, size=min(removes, n), replace=False)
        index.remove(gone)
        ref.remove(gone)
    q = rng.integers(-2, 3, (7, dim)).astype(np.float32)
    d, i = index.search(q, k)
    rd, ri = ref.search(q, k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd.astype(np.float32))
    for (got_d, got_i), (want_i, want_d) in zip(index.range_search(q, threshold), ref.range(q, threshold)):
        assert got_i.tolist() == want_i and got_d.tolist() == want_d


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 5), n=st.integers(1, 300), k=st.integers(1, 320))
def test_topk_largest_matches_stable_sort(seed, m, n, k):
    rng = np.random.default_rng(seed)
    s = rng.integers(-3, 4, (m, n)).astype(np.float32)
    vals, cols = topk_largest(s, k)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    kk = order.shape[1]
    np.testing.assert_array_equal(cols[:, :kk], order)
    np.testing.assert_array_equal(vals[:, :kk], np.take_along_axis(s, order, 1))
    assert (cols[:, kk:] == -1).all() and np.isneginf(vals[:, kk:]).all()


def test_flat_tie_boundary_keeps_earliest_inserted():
    # ten identical codes, k=3: the first three inserted (by position, not by id) must win
    index = make_index("flat", bits=8)
    ids = np.array([90, 10, 50, 70, 30, 20, 80, 40, 60, 0])
    index.add(np.full((10, 1), 7, np.uint8), ids)
    d, i = index.search(np.full((1, 1), 7, np.uint8), 3)
    assert i.tolist() == [[90, 10, 50]] and d.tolist() == [[0, 0, 0]]
    index.remove([10])
    _, i = index.search(np.full((1, 1), 7, np.uint8), 3)
    assert i.tolist() == [[90, 50, 70]]
