"""Searches run in parallel (no lock held across a search), per-call parameters never leak into
other calls, and writers exclude readers so no search sees half of a change."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bitseek.errors import ConfigError
from bitseek.index import RWLock, make_index

SPECS = ["flat", "ivf4,nprobe=1", "mih2,nflip=1", "hnsw8", "float-ip", "faiss:BIVF4,nprobe=1"]


def _filled(spec: str, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    if spec == "float-ip":
        x = rng.standard_normal((n, 6)).astype(np.float32)
        index = make_index(spec, dim=6)
    else:
        x = rng.integers(0, 256, (n, 2), dtype=np.uint8)
        index = make_index(spec, bits=16)
        index.train(x)
    index.add(x, np.arange(n) * 3)
    return index, x


@pytest.mark.parametrize("spec", SPECS)
def test_two_searches_are_inside_the_engine_at_once(spec):
    # Each search waits inside the engine until the other one is there too: with a lock held
    # across searches the second could never enter and the barrier would time out.
    index, x = _filled(spec)
    barrier = threading.Barrier(2, timeout=10)
    inner = index._knn

    def meeting(q, k, opts):
        barrier.wait()
        return inner(q, k, opts)

    index._knn = meeting
    params = {k: 2 for k in index.search_params if k != "nflip"}  # nflip != default is exclusive
    results, errors = [None, None], []

    def run(j: int) -> None:
        try:
            results[j] = index.search(x[j * 5 : j * 5 + 5], 3, **(params if j else {}))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(r is not None for r in results)


def test_per_call_parameters_do_not_change_the_index():
    index, x = _filled("ivf4,nprobe=1")
    wide = index.search(x[:20], 5, nprobe=4)
    assert index.options == {"nprobe": 1} and index._faiss.nprobe == 1
    all_lists = make_index("ivf4,nprobe=4", bits=16)
    all_lists.train(x)
    all_lists.add(x, np.arange(400) * 3)
    for got, want in zip(wide, all_lists.search(x[:20], 5)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="no search parameter 'ef_search'"):
        index.search(x[:1], 1, ef_search=10)
    with pytest.raises(ConfigError, match="must be >= 1"):
        index.search(x[:1], 1, nprobe=0)


def test_ivf_range_search_with_another_nprobe_equals_an_index_built_with_it():
    index, x = _filled("ivf4,nprobe=1")
    index.remove([6, 9])
    for nprobe in (2, 3, 4):
        other = make_index(f"ivf4,nprobe={nprobe}", bits=16)
        other.train(x)
        other.add(x, np.arange(400) * 3)
        other.remove([6, 9])
        got, want = index.range_search(x[:30], 5, nprobe=nprobe), other.range_search(x[:30], 5)
        np.testing.assert_array_equal(got.lims, want.lims)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.distances, want.distances)
    assert index._faiss.nprobe == 1


def test_multihash_knn_with_its_own_nflip_restores_it():
    index, x = _filled("mih2,nflip=0")
    d0, i0 = index.search(x[:10], 5)
    d2, i2 = index.search(x[:10], 5, nflip=2)
    assert index._faiss.nflip == 0 and index.options == {"nflip": 0}
    assert ((i2 >= 0).sum() >= (i0 >= 0).sum())  # more flips find at least as many candidates
    np.testing.assert_array_equal(index.search(x[:10], 5)[1], i0)


def test_readers_never_see_half_a_write():
    # readers look up items that always stay; a writer keeps adding and removing other items
    index, x = _filled("flat", n=300)
    stable = np.arange(300) * 3
    stop = threading.Event()
    errors: list[Exception] = []

    def writer() -> None:
        rng = np.random.default_rng(1)
        n = 0
        try:
            while not stop.is_set():
                extra = rng.integers(0, 256, (50, 2), dtype=np.uint8)
                new = 10_000 + np.arange(n, n + 50)
                index.add(extra, new)
                index.remove(new[::2])
                index.remove(new[1::2])  # at most 50 extra items at any time
                n += 50
        except Exception as e:
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(40):
                d, i = index.search(x[:50], 1)
                # a code equal to a stored one is at distance 0; every returned id is a real one
                assert (d[:, 0] == 0).all() and (i[:, 0] >= 0).all()
                _, everything = index.search(x[:2], 300 + 60)
                assert np.isin(stable, everything[0]).all()  # no stable item ever goes missing
        except Exception as e:
            errors.append(e)

    w = threading.Thread(target=writer)
    readers = [threading.Thread(target=reader) for _ in range(3)]
    w.start()
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    stop.set()
    w.join()
    assert not errors, errors
    assert index.ids.tolist() == stable.tolist()


def test_rwlock_readers_share_writers_exclude():
    lock = RWLock()
    inside, peak, log = [0], [0], []
    guard = threading.Lock()

    def read() -> None:
        with lock.read():
            with guard:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    def write() -> None:
        with lock.write():
            with guard:
                log.append(inside[0])  # no reader may be inside while writing
            with lock.read():  # a writer may use read-side helpers
                pass

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] >= 2 and log == [0]
