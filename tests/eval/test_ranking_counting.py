"""Counting top-k (binary codes) against the partition path and a plain stable sort."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.eval import map_at_k, precision_at_k
from bitseek.eval import ranking
from bitseek.eval.inputs import prepare_codes
from bitseek.eval.ranking import iter_topk


def clustered(seed: int, n: int, bits: int, n_centres: int = 6, flip: float = 0.2) -> np.ndarray:
    """±1 codes near a few centres: many rows at each distance, so ties decide the top-k."""
    rng = np.random.default_rng(seed)
    centres = np.sign(rng.standard_normal((n_centres, bits)))
    x = centres[rng.integers(0, n_centres, n)] * np.where(rng.random((n, bits)) < flip, -1, 1)
    return x.astype(np.float32)


def sorted_topk(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """Unoptimised reference: the full distance matrix, stable-sorted per row."""
    dist = 0.5 * (q.shape[1] - q.astype(np.float64) @ d.T.astype(np.float64))
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def collect(codes, k, chunk_size=None) -> np.ndarray:
    return np.concatenate([idx for _, idx in iter_topk(codes, k, "stable", chunk_size=chunk_size)])


@pytest.mark.parametrize("bits", [8, 24, 64, 128])
@pytest.mark.parametrize("k", [1, 5, 37, 100])
@pytest.mark.parametrize("form", ["float", "packed"])
def test_counting_top_k_equals_a_stable_sort(bits, k, form, monkeypatch):
    q, d = clustered(1, 70, bits), clustered(2, 7000, bits)
    qq, dd = (q, d) if form == "float" else (np.packbits(q > 0, axis=1), np.packbits(d > 0, axis=1))
    codes = prepare_codes(qq, dd)
    assert ranking._counting_fits(codes, k)

    def refuse(*a, **kw):
        raise AssertionError("the partition path ran where counting applies")

    monkeypatch.setattr(ranking, "_topk_stable", refuse)
    exp = sorted_topk(q, d, k)
    assert np.array_equal(collect(codes, k), exp)
    assert np.array_equal(collect(codes, k, chunk_size=9), exp)


def test_counting_and_partition_paths_agree_on_self_search():
    x = clustered(3, 2000, 16, n_centres=3, flip=0.1)  # 16 bits: hundreds of rows per distance
    codes = prepare_codes(x, None)
    assert ranking._counting_fits(codes, 50)
    counted = collect(codes, 50)
    parted = np.concatenate([ranking._topk_stable(codes, slice(s, s + 256), 50) for s in range(0, 2000, 256)])
    assert np.array_equal(counted, parted)
    assert np.array_equal(counted, sorted_topk(x, x, 50))


def test_ternary_codes_and_large_k_take_the_partition_path():
    x = clustered(4, 300, 16)
    x[::7, 3] = 0  # exact zeros: half-integer distances
    assert prepare_codes(x, None).hamming_bytes is None
    b = clustered(5, 300, 16)
    assert not ranking._counting_fits(prepare_codes(b, None), 300)  # mAP@all-sized k
    assert np.array_equal(collect(prepare_codes(b, None), 300), sorted_topk(b, b, 300))


def test_map_at_k_is_the_same_through_counting_and_partition(monkeypatch):
    q, d = clustered(6, 120, 32), clustered(7, 3000, 32)
    rng = np.random.default_rng(8)
    ql, dl = rng.integers(0, 5, 120), rng.integers(0, 5, 3000)
    ks = [1, 5, 20, 100]
    fast = map_at_k(q, d, ql, dl, ks=ks), precision_at_k(q, d, ql, dl, ks=ks)
    monkeypatch.setattr(ranking, "_counting_fits", lambda codes, k: False)
    slow = map_at_k(q, d, ql, dl, ks=ks), precision_at_k(q, d, ql, dl, ks=ks)
    assert fast == slow  # exact: the same indices in the same order
