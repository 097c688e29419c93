"""Every registered index engine through one contract.

Exact engines must equal brute force, ties included (equal distances in insertion order, the
earliest-inserted kept at a tied k-th place); approximate engines must reach the stated tie-aware
recall on clustered codes (what learned codes look like) and return honest distances. Every engine:
removal, save/load, and concurrent searches equal to serial ones. An engine registered without a
case here fails ``test_every_registered_engine_has_a_case``.

The brute force below shares no code with ``bitseek.index`` (distances via ``np.unpackbits``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from bitseek.eval.ann import distance_recall
from bitseek.index import PAD_ID, engine_names, load_index, make_index


@dataclass(frozen=True)
class Case:
    spec: str
    exact: bool
    recall: float = 1.0  # tie-aware k-NN recall an approximate engine must reach here
    float_data: bool = False
    params: dict = field(default_factory=dict)  # a per-call parameter asking for more effort
    recall_with_params: float = 0.99  # ... and the recall it must then reach
    range_exact: bool = True  # range search equals brute force


CASES: dict[str, list[Case]] = {
    "flat": [Case("flat", exact=True)],
    "float-ip": [Case("float-ip", exact=True, float_data=True)],
    "ivf": [Case("ivf8,nprobe=3", exact=False, recall=0.9, params={"nprobe": 8}, range_exact=False)],
    "multihash": [Case("mih4,nflip=1", exact=False, recall=0.9, params={"nflip": 2})],
    "hnsw": [Case("hnsw16,ef_search=32", exact=False, recall=0.9, params={"ef_search": 128})],
    "faiss": [
        Case("faiss:BFlat", exact=True),
        Case("faiss:BIVF8_HNSW8,nprobe=3", exact=False, recall=0.9, params={"nprobe": 8}, range_exact=False),
    ],
    # 600 codes are below auto's sweep size, so it picks the exact scan (tests/index/test_auto.py tunes IVF)
    "auto": [Case("auto,target_recall=0.95", exact=True)],
    # a server engine: tests/index/test_milvus.py starts the embedded server and holds it to faiss flat
    "milvus": [],
    "milvus-ip": [],
}
ALL = [pytest.param(c, id=c.spec) for cases in CASES.values() for c in cases]
BITS, N, NQ, K = 32, 600, 40, 10


def test_every_registered_engine_has_a_case():
    assert set(engine_names()) <= set(CASES), f"engines without a contract case: {set(engine_names()) - set(CASES)}"


def _data(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered codes with exact duplicates (so there are ties at every k), ids that are not
    positions, and queries near stored items."""
    rng = np.random.default_rng(seed)
    if case.float_data:  # few distinct values: many exactly equal scores
        db = rng.integers(-2, 3, (N, 8)).astype(np.float32)
        q = rng.integers(-2, 3, (NQ, 8)).astype(np.float32)
        return db, np.arange(N, dtype=np.int64) * 7 + 3, q
    centres = rng.integers(0, 2, (24, BITS), dtype=np.uint8)
    bits = centres[rng.integers(0, 24, N)]
    flip = rng.random((N, BITS)) < 0.06
    bits = bits ^ flip
    bits[N // 2 : N // 2 + 60] = bits[:60]  # exact duplicates inserted later
    q = bits[rng.choice(N, NQ, replace=False)] ^ (rng.random((NQ, BITS)) < 0.05)
    return np.packbits(bits, axis=1), np.arange(N, dtype=np.int64) * 7 + 3, np.packbits(q, axis=1)


def _scores(case: Case, q: np.ndarray, db: np.ndarray) -> np.ndarray:
    if case.float_data:
        return q.astype(np.float64) @ db.astype(np.float64).T
    return (np.unpackbits(q, axis=1)[:, None, :] != np.unpackbits(db, axis=1)[None]).sum(-1)


def _brute_knn(case: Case, q, db, ids, k):
    """Top-k, ties in insertion order, rows padded past the database as the index layer does."""
    s = _scores(case, q, db)
    order = np.argsort(-s if case.float_data else s, axis=1, kind="stable")[:, :k]
    d = np.full((len(q), k), -np.inf if case.float_data else np.iinfo(np.int32).max, dtype=np.float64)
    i = np.full((len(q), k), PAD_ID, dtype=np.int64)
    d[:, : order.shape[1]] = np.take_along_axis(s, order, 1)
    i[:, : order.shape[1]] = ids[order]
    return d, i


def _brute_range(case: Case, q, db, ids, radius):
    s = _scores(case, q, db)
    out = []
    for row in s:
        order = np.argsort(-row if case.float_data else row, kind="stable")
        hit = order[(row[order] >= radius) if case.float_data else (row[order] <= radius)]
        out.append((row[hit], ids[hit]))
    return out


def _built(case: Case):
    db, ids, q = _data(case)
    index = make_index(case.spec, dim=db.shape[1]) if case.float_data else make_index(case.spec, bits=BITS)
    index.train(db)
    index.add(db, ids)
    return index, db, ids, q


def _radius(case: Case):
    return 2.0 if case.float_data else 4


def _check_knn(case: Case, index, q, db, ids, k=K, recall=True):
    d, i = index.search(q, k)
    td, ti = _brute_knn(case, q, db, ids, k)
    assert d.shape == i.shape == (len(q), k)
    if case.exact:
        np.testing.assert_array_equal(i, ti)
        np.testing.assert_array_equal(d, td)
        return
    # approximate: honest distances, best first, no repeats, only stored ids, and the stated recall
    pos = {int(x): j for j, x in enumerate(ids)}
    s = _scores(case, q, db)
    for r in range(len(q)):
        got = i[r][i[r] != PAD_ID]
        assert len(set(got.tolist())) == got.size
        assert (np.diff(d[r][: got.size]) >= 0).all()
        np.testing.assert_array_equal(d[r][: got.size], s[r, [pos[int(x)] for x in got]])
    if recall:
        assert distance_recall(d, i, td, ti) >= case.recall


@pytest.mark.parametrize("case", ALL)
def test_knn_and_range_against_brute_force(case):
    index, db, ids, q = _built(case)
    assert index.exact == case.exact and len(index) == N
    _check_knn(case, index, q, db, ids)
    _check_knn(case, index, q, db, ids, k=N + 5, recall=False)  # k above the database: padded rows
    if case.params:
        d, i = index.search(q, K, **case.params)
        td, ti = _brute_knn(case, q, db, ids, K)
        assert distance_recall(d, i, td, ti) >= case.recall_with_params
    if case.spec.startswith("faiss:BHNSW"):
        return
    res = index.range_search(q, _radius(case))
    truth = _brute_range(case, q, db, ids, _radius(case))
    for (gd, gi), (wd, wi) in zip(res, truth):
        if case.range_exact:
            np.testing.assert_array_equal(gi, wi)
            np.testing.assert_array_equal(gd, wd)
        else:  # a subset of the truth, best first
            assert set(gi.tolist()) <= set(wi.tolist()) and (np.diff(gd) >= 0).all()


@pytest.mark.parametrize("case", ALL)
def test_remove(case):
    index, db, ids, q = _built(case)
    gone = ids[::3]
    assert index.remove(gone) == gone.size and len(index) == N - gone.size
    assert int(gone[0]) not in index and int(ids[1]) in index
    keep = np.ones(N, bool)
    keep[::3] = False
    np.testing.assert_array_equal(index.ids, ids[keep])
    d, i = index.search(q, K)
    assert not np.isin(i, gone).any()
    if case.exact:
        td, ti = _brute_knn(case, q, db[keep], ids[keep], K)
        np.testing.assert_array_equal(i, ti)
        np.testing.assert_array_equal(d, td)
    index.compact()
    assert not np.isin(index.search(q, K)[1], gone).any() and len(index) == N - gone.size


@pytest.mark.parametrize("case", ALL)
def test_save_load(case, tmp_path):
    index, db, ids, q = _built(case)
    index.remove(ids[:5])
    index.save(tmp_path / "x.bsi")
    back = load_index(tmp_path / "x.bsi")
    assert type(back) is type(index) and back.spec == index.spec and len(back) == len(index)
    np.testing.assert_array_equal(back.ids, index.ids)
    for got, want in zip(back.search(q, K), index.search(q, K)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ALL)
def test_concurrent_search_equals_serial(case):
    index, db, ids, q = _built(case)
    calls = [(s, k, params) for s in range(0, NQ, 5) for k in (1, K) for params in ({}, case.params)]
    serial = [index.search(q[s : s + 5], k, **p) for s, k, p in calls]
    out: list = [None] * len(calls)
    errors: list = []

    def worker(t: int) -> None:
        try:
            for j in range(t, len(calls), 4):
                s, k, p = calls[j]
                out[j] = index.search(q[s : s + 5], k, **p)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (gd, gi), (wd, wi) in zip(out, serial):
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_array_equal(gd, wd)
