"""Approximate and trained backends: IVF, multi-index hashing, HNSW."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitseek.errors import InputError
from bitseek.index import PAD_HAMMING, IndexNotTrainedError, make_index


def _codes(seed: int, n: int, bits: int, distinct: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if distinct is None:
        return rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    palette = rng.integers(0, 256, (distinct, bits // 8), dtype=np.uint8)
    return palette[rng.integers(0, distinct, n)]


def _near(codes: np.ndarray, flips: int, seed: int) -> np.ndarray:
    """Copies of ``codes`` with ``flips`` random bits flipped (near-duplicate queries)."""
    rng = np.random.default_rng(seed)
    bits = np.unpackbits(codes, axis=1)
    for row in bits:
        row[rng.choice(row.size, flips, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def assert_same_topk_up_to_boundary_ties(got, want):
    """Distances equal; ids equal except among the items tied at the k-th distance of a row."""
    (d, i), (rd, ri) = got, want
    np.testing.assert_array_equal(d, rd.astype(np.int64))
    for row_d, row_i, ref_i, ref_d in zip(d, i, ri, rd):
        inner = row_d < row_d[-1]
        assert row_i[inner].tolist() == ref_i[inner].tolist()
        tied = row_i[~inner]
        assert tied.tolist() == sorted(tied.tolist()) or (tied == -1).all()  # ties in insertion order


# ----------------------------------------------------------------------------- multi-index hashing
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    spec=st.sampled_from(["mih2", "mih4", "multihash3x5", "multihash2x4,nflip=0"]),
    radius=st.integers(0, 16),
    n_remove=st.integers(0, 40),
)
def test_multihash_range_search_is_exact(brute, seed, spec, radius, n_remove):
    # pigeonhole: range_search raises nflip to radius // nhash for the call, so nothing is missed
    codes = _codes(seed, 200, 16, distinct=60)
    ids = np.arange(200) * 5 + 3
    index, ref = make_index(spec, bits=16), brute()
    index.add(codes, ids)
    ref.add(codes, ids)
    gone = np.random.default_rng(seed).choice(ids, n_remove, replace=False)
    index.remove(gone)
    ref.remove(gone)
    q = np.concatenate([codes[:3], _codes(seed + 1, 3, 16)])
    for (got_d, got_i), (want_i, want_d) in zip(index.range_search(q, radius), ref.range(q, radius)):
        assert got_i.tolist() == want_i and got_d.tolist() == want_d


def test_multihash_knn_finds_near_duplicates_and_pads():
    codes = _codes(0, 5000, 64)
    index = make_index("mih4,nflip=1", bits=64)
    index.add(codes, np.arange(5000) + 100)
    q = _near(codes[:50], 3, seed=1)
    d, i = index.search(q, 5)
    assert (i[:, 0] == np.arange(50) + 100).all() and (d[:, 0] == 3).all()
    assert (d[i == -1] == PAD_HAMMING).all()  # only candidates within nflip are ranked: rows may pad
    assert (np.diff(np.where(i == -1, PAD_HAMMING, d), axis=1) >= 0).all()


def test_tombstones_are_skipped_and_compacted(brute):
    # nflip = b probes every bucket, so k-NN sees every candidate and must equal the reference
    codes = _codes(2, 400, 16, distinct=5)
    index, ref = make_index("mih2,nflip=8", bits=16), brute()
    index.add(codes, np.arange(400))
    ref.add(codes, np.arange(400))
    q = np.concatenate([codes[:4], _codes(3, 2, 16)])
    index.remove(np.arange(0, 400, 3))  # 134 dead < 266 alive: tombstoned, not rebuilt
    ref.remove(np.arange(0, 400, 3))
    assert index._idmap.n_dead == 134 and len(index) == 266 and index._faiss.ntotal == 400
    assert_same_topk_up_to_boundary_ties(index.search(q, 50), ref.search(q, 50))
    index.remove(np.arange(1, 400, 3))  # now dead outnumber alive: rebuilt from the stored codes
    ref.remove(np.arange(1, 400, 3))
    assert index._idmap.n_dead == 0 and index._faiss.ntotal == len(index) == 133
    for got, want in zip(index.search(q, 200), ref.search(q, 200)):  # no boundary: all 133 returned
        np.testing.assert_array_equal(got, want)


def test_rows_short_of_live_hits_are_refetched():
    # 140 dead exact matches rank before every live item: the first over-fetch (2k+16 rows) is all
    # dead, so the row must be searched again with k + n_dead rows instead of coming back padded
    index = make_index("mih1,nflip=8", bits=8)
    index.add(np.concatenate([np.zeros((140, 1), np.uint8), np.ones((160, 1), np.uint8)]), np.arange(300))
    index.remove(np.arange(140))
    assert index._idmap.n_dead == 140
    d, i = index.search(np.zeros((2, 1), np.uint8), 5)
    assert (d == 1).all() and np.isin(i, np.arange(140, 300)).all()


# ----------------------------------------------------------------------------- IVF
def test_untrained_ivf_refuses_add_and_search():
    index = make_index("ivf16", bits=32)
    assert not index.is_trained
    codes = _codes(0, 10, 32)
    for call in (lambda: index.add(codes), lambda: index.search(codes, 3), lambda: index.range_search(codes, 2)):
        with pytest.raises(IndexNotTrainedError, match=r"ivf16.*not trained.*train\(codes\).*16 codes"):
            call()
    assert isinstance(IndexNotTrainedError("x"), InputError)
    with pytest.raises(InputError, match="10 training codes for 16 lists"):
        index.train(codes)


def test_ivf_with_all_lists_probed_is_exact_up_to_ties(brute):
    codes = _codes(3, 600, 32, distinct=200)
    ids = np.random.default_rng(0).permutation(10_000)[:600]
    index, ref = make_index("ivf8,nprobe=8", bits=32), brute()
    index.train(codes)
    index.add(codes, ids)
    ref.add(codes, ids)
    q = np.concatenate([codes[:5], _codes(9, 5, 32)])
    d, i = index.search(q, 20)
    rd, _ = ref.search(q, 20)
    np.testing.assert_array_equal(d, rd.astype(np.int64))
    for (got_d, got_i), (want_i, want_d) in zip(index.range_search(q, 10), ref.range(q, 10)):
        assert sorted(got_i.tolist()) == sorted(want_i) and got_d.tolist() == want_d
        assert all(a < b for (a, x), (b, y) in zip(zip(got_i, got_d), zip(got_i[1:], got_d[1:])) if x == y)
    index.remove(ids[:100])
    _, i = index.search(q, 50)
    assert not np.isin(i, ids[:100]).any()


def test_ivf_options_and_retrain_rules():
    codes = _codes(4, 2000, 64)
    index = make_index("ivf32", bits=64)
    index.train(codes)
    index.add(codes)
    q = _near(codes[:40], 2, seed=5)
    index.set_options(nprobe=32)  # every list: near-duplicates are always found
    assert index.spec == "ivf32,nprobe=32"
    _, high = index.search(q, 1)
    assert (high[:, 0] == np.arange(40)).all()
    with pytest.raises(InputError, match="already holds 2000 codes"):
        index.train(codes)
    empty = make_index("ivf4", bits=64)
    empty.train(codes[:100])
    empty.train(codes[100:200])  # an empty trained index may be retrained
    assert empty.is_trained


# ----------------------------------------------------------------------------- HNSW
def test_hnsw_knn_range_and_removal(brute):
    codes = _codes(6, 400, 32, distinct=150)
    ids = np.arange(400) + 7
    index, ref = make_index("hnsw8,ef_search=200", bits=32), brute()
    index.add(codes, ids)
    ref.add(codes, ids)
    q = np.concatenate([codes[:5], _near(codes[5:10], 2, seed=2)])
    d, i = index.search(q, 10)
    rd, _ = ref.search(q, 10)
    assert (d[:, 0] == rd[:, 0]).all()
    assert np.mean(d == rd) > 0.9
    for (got_d, got_i), (want_i, want_d) in zip(index.range_search(q, 6), ref.range(q, 6)):
        assert set(got_i.tolist()) <= set(want_i) and len(got_i) >= 0.9 * len(want_i)
        assert (np.diff(got_d) >= 0).all() and (got_d <= 6).all()
    index.remove(ids[:50])
    assert index._idmap.n_dead == 50
    _, i = index.search(q, 30)
    assert not np.isin(i, ids[:50]).any()
    _, got = index.range_search(q, 32)[0]
    assert len(got) == 350 and not np.isin(got, ids[:50]).any()  # radius = all bits: every live item


def test_hnsw_rebuild_after_most_rows_are_removed():
    codes = _codes(7, 300, 32)
    index = make_index("hnsw8,ef_search=300", bits=32)
    index.add(codes, np.arange(300))
    index.remove(np.arange(10))
    index.compact()  # explicit rebuild
    assert index._idmap.n_dead == 0 and index._faiss.ntotal == 290
    index.remove(np.arange(10, 200))  # automatic rebuild once removed rows outnumber live ones
    assert index._idmap.n_dead == 0 and index._faiss.ntotal == len(index) == 100
    d, i = index.search(codes[200:210], 1)
    assert i[:, 0].tolist() == list(range(200, 210)) and (d[:, 0] == 0).all()
    assert index.ids.tolist() == list(range(200, 300))
