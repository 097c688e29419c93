"""k-means (faiss) against Lloyd's algorithm written out in numpy, from the same starting centres."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.cluster import kmeans
from bitseek.errors import InputError


def lloyd(x: np.ndarray, init: np.ndarray, niter: int) -> tuple[np.ndarray, float]:
    """Plain Lloyd iterations in float64: assign to the nearest centre, move each centre to its mean."""
    c = init.astype(np.float64).copy()
    for _ in range(niter):
        d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        a = d.argmin(1)
        for j in range(len(c)):
            if (a == j).any():
                c[j] = x[a == j].mean(0)
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    return c, float(d.min(1).sum())


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 7.0, -2.0]])
    return np.concatenate([c + rng.normal(0, 0.5, (40, 3)) for c in centres]).astype(np.float32)


def test_warm_started_kmeans_equals_lloyd_iterations() -> None:
    x = _blobs()
    rng = np.random.default_rng(1)
    init = x[rng.choice(len(x), 3, replace=False)] + rng.normal(0, 1.0, (3, 3)).astype(np.float32)
    for niter in (1, 2, 10):
        got = kmeans(x, 3, init=init, niter=niter)
        want, _ = lloyd(x.astype(np.float64), init, niter)
        assert got.warm_started
        np.testing.assert_allclose(got.centroids, want, rtol=1e-5, atol=1e-5)
    # after convergence the objective is the sum of squared distances to the nearest centre
    _, obj = lloyd(x.astype(np.float64), got.centroids, 0)
    assert got.objective == pytest.approx(obj, rel=1e-4)


def test_cold_start_is_seeded_and_finds_separated_blobs() -> None:
    x = _blobs(2)
    a, b = kmeans(x, 3, seed=5), kmeans(x, 3, seed=5)
    assert not a.warm_started
    np.testing.assert_array_equal(a.centroids, b.centroids)
    means = np.stack([x[i * 40:(i + 1) * 40].mean(0) for i in range(3)])
    order = [int(np.argmin(((a.centroids - m) ** 2).sum(1))) for m in means]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(a.centroids[order], means, atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.zeros((0, 3)), k=1), "non-empty"),
    (dict(x=np.ones((4, 2)), k=5), "between 1 and"),
    (dict(x=np.full((4, 2), np.nan), k=2), "NaN"),
    (dict(x=np.ones((4, 2)), k=2, init=np.ones((3, 2))), "init must have shape"),
    (dict(x=np.ones((4, 2)), k=2, niter=0), "niter"),
])
def test_argument_errors(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        kmeans(**kwargs)
