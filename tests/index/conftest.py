"""A deliberately naive reference index: a list of (id, code) in insertion order, scored in numpy.

It shares no code with ``bitseek.index`` (distances come from ``np.unpackbits``, not from
``bitseek.codes.hamming``), so agreeing with it means the real backends follow the documented rules:
best first, equal distances by insertion order, inclusive radius.
"""

from __future__ import annotations

import numpy as np
import pytest


class BruteForce:
    def __init__(self, metric: str = "hamming") -> None:
        self.metric = metric
        self.rows: list[np.ndarray] = []
        self.ids: list[int] = []

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        for c, i in zip(codes, ids):
            self.rows.append(np.asarray(c))
            self.ids.append(int(i))

    def remove(self, ids) -> None:
        drop = {int(i) for i in np.atleast_1d(ids)}
        keep = [j for j, i in enumerate(self.ids) if i not in drop]
        self.rows = [self.rows[j] for j in keep]
        self.ids = [self.ids[j] for j in keep]

    def scores(self, q: np.ndarray) -> np.ndarray:
        if not self.rows:
            return np.zeros((len(q), 0))
        db = np.stack(self.rows)
        if self.metric == "hamming":
            return (np.unpackbits(q, axis=1)[:, None, :] != np.unpackbits(db, axis=1)[None, :, :]).sum(-1)
        return q.astype(np.float64) @ db.astype(np.float64).T

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.scores(q)
        key = s if self.metric == "hamming" else -s
        order = np.argsort(key, axis=1, kind="stable")[:, :k]  # stable: ties keep insertion order
        ids = np.asarray(self.ids, dtype=np.int64)
        n = order.shape[1]
        pad_d = np.iinfo(np.int32).max if self.metric == "hamming" else -np.inf
        out_d = np.full((len(q), k), pad_d, dtype=np.float64)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_d[:, :n] = np.take_along_axis(s, order, 1)
        out_i[:, :n] = ids[order]
        return out_d, out_i

    def range(self, q: np.ndarray, radius) -> list[tuple[list[int], list[float]]]:
        s = self.scores(q)
        out = []
        for row in s:
            if self.metric == "hamming":
                hit = [j for j in np.argsort(row, kind="stable") if row[j] <= radius]
            else:
                hit = [j for j in np.argsort(-row, kind="stable") if row[j] >= radius]
            out.append(([self.ids[j] for j in hit], [float(row[j]) for j in hit]))
        return out


@pytest.fixture(scope="session")
def brute():
    return BruteForce


@pytest.fixture(scope="session", autouse=True)
def _one_faiss_thread():
    """The test machine is shared; OpenMP spinning on a busy core makes tiny searches slow."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
