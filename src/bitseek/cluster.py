"""k-means on code vectors with faiss (CPU), deterministic given a seed, optionally warm-started.

WSCH re-clusters the training codes before every epoch of its main stage and starts each run
from the previous epoch's centres; faiss takes those as initial centroids. faiss does its
assignments with an exact search and sums each centroid's points in a fixed order, so a given
(data, init, seed) always yields the same centres, whatever the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitseek.errors import InputError

__all__ = ["KMeansResult", "kmeans"]


@dataclass
class KMeansResult:
    """Centres (k, d) float32, the final objective (sum of squared distances) and whether init was given."""

    centroids: np.ndarray
    objective: float
    warm_started: bool


def kmeans(x: np.ndarray, k: int, *, init: np.ndarray | None = None, niter: int = 25, seed: int = 0,
           use_all_points: bool = True) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` centres.

    ``init`` (k, d) warm-starts from given centres; otherwise faiss picks k distinct training
    points at random (seeded). ``use_all_points`` disables faiss' subsampling to 256 points per
    centre, so every vector counts, as in scikit-learn's k-means used by WSCH.
    """
    import faiss  # imported here: faiss loads OpenMP and BLAS, which `import bitseek` should not

    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"kmeans: x must be a non-empty 2-D array (n, d), got shape {np.shape(x)}")
    if not np.isfinite(a).all():
        raise InputError("kmeans: x contains NaN or infinite values")
    n, d = a.shape
    if not 1 <= k <= n:
        raise InputError(f"kmeans: k must be between 1 and the number of vectors ({n}), got {k}")
    if niter < 1:
        raise InputError(f"kmeans: niter must be >= 1, got {niter}")
    start = None
    if init is not None:
        start = np.ascontiguousarray(init, dtype=np.float32)
        if start.shape != (k, d):
            raise InputError(f"kmeans: init must have shape ({k}, {d}), got {start.shape}")
        if not np.isfinite(start).all():
            raise InputError("kmeans: init contains NaN or infinite values")
    km = faiss.Kmeans(
        d, k, niter=niter, seed=int(seed) % (2**31), verbose=False,
        min_points_per_centroid=1,  # the caller decides k; no "too few points" warning
        max_points_per_centroid=(n // k + 1) if use_all_points else 256,
    )
    obj = km.train(a, init_centroids=start)
    return KMeansResult(np.asarray(km.centroids, dtype=np.float32).copy(), float(obj), start is not None)
