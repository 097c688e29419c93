"""Clustered binary codes at any size whose statistics match learned codes.

Why: approximate search is only worth measuring on codes shaped like the ones a hashing model
emits. Uniform random codes have no neighbours (every distance is about bits/2), so IVF and HNSW
look useless on them; real codes come in clusters (a class, a scene, near-duplicates) with
correlated, roughly balanced bits. Collections of 10M-100M learned codes do not ship anywhere, so
this module makes codes from a small generative model fitted to the codes a real model produced on
a built-in benchmark (``benchmarks/bench_synthetic_codes.py`` fits it to ITQ on ``mnist-video`` and
reports how close each statistic comes).

The model (a Gaussian mixture thresholded bit by bit)::

    cluster   k ~ Categorical(w)            w: log-normal sizes, spread ``size_sigma``
    latent    z = L (m_k + spread * e)      m_k, e ~ N(0, I_bits), L Lᵀ = C (unit diagonal)
    bit j     b_j = [z_j + t_j > 0]

``C`` sets the bit correlations (the sign of a Gaussian pair with correlation rho has correlation
(2/pi)·arcsin(rho), inverted when fitting), the offsets ``t`` are solved per bit so that the share
of 1s is exactly the target balance under the mixture, and ``clusters`` and ``spread`` (within- to
between-cluster scale) set the neighbour structure: they are fitted by matching the distances to
the 1st and 10th nearest neighbour and the all-pairs distances at the reference set's size. The
model is a population: more samples mean closer nearest neighbours, as in a real collection.

Sampling is deterministic and streamable: row ``i`` belongs to block ``i // BLOCK`` and each block
has its own seeded generator, so ``sample(n)`` equals the concatenation of any chunking of
``iter_chunks(n, chunk)`` and 10M codes never need more than one block of floats in memory.
``stream=1`` (or any other) gives an independent set from the same population (held-out queries).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.codes.bits import check_packed, hamming
from bitseek.errors import InputError

__all__ = ["ClusteredCodes", "BLOCK", "code_statistics", "compare_statistics", "fit_clustered", "cached_codes"]

BLOCK = 65536  # rows per seeded block; part of the definition of a sample, do not change casually


def _ndtr(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


@dataclass(frozen=True)
class ClusteredCodes:
    """A population of ``bits``-bit codes (see the module docstring for the model).

    ``balance``: per-bit share of 1s (``None``: 0.5 each); ``correlation``: the latent correlation
    matrix ``C`` (``None``: identity). Build one with :func:`fit_clustered` to match real codes.
    """

    bits: int = 64
    clusters: int = 1024
    spread: float = 0.5
    size_sigma: float = 1.0
    balance: tuple[float, ...] | None = None
    correlation: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or self.bits < 8 or self.bits % 8:
            raise InputError(f"ClusteredCodes: bits must be a positive multiple of 8, got {self.bits!r}")
        if int(self.clusters) < 1:
            raise InputError(f"ClusteredCodes: clusters must be >= 1, got {self.clusters!r}")
        if not float(self.spread) > 0:
            raise InputError(f"ClusteredCodes: spread must be > 0, got {self.spread!r}")
        if float(self.size_sigma) < 0:
            raise InputError(f"ClusteredCodes: size_sigma must be >= 0, got {self.size_sigma!r}")
        if self.balance is not None:
            p = np.asarray(self.balance, dtype=np.float64)
            if p.shape != (self.bits,) or not ((p > 0) & (p < 1)).all():
                raise InputError(f"ClusteredCodes: balance must be {self.bits} shares strictly inside (0, 1)")
        if self.correlation is not None and np.asarray(self.correlation).shape != (self.bits, self.bits):
            raise InputError(f"ClusteredCodes: correlation must be a {self.bits}x{self.bits} matrix")

    # ------------------------------------------------------------------ the fixed part of the population
    @cached_property
    def _model(self) -> dict[str, np.ndarray]:
        """Cluster weights, latent centroids, the factor L and the calibrated per-bit offsets."""
        rng = np.random.default_rng([int(self.seed), 0x5EED])
        k, d, s = int(self.clusters), int(self.bits), float(self.spread)
        w = np.exp(self.size_sigma * rng.standard_normal(k))
        w /= w.sum()
        c = np.eye(d) if self.correlation is None else _nearest_correlation(np.asarray(self.correlation, float))
        lower = np.linalg.cholesky(c)
        # centroids whitened under the weights, so that their covariance is exactly C: a few hundred
        # random centres would otherwise add sampling noise of ~1/sqrt(k) to every bit correlation
        raw = rng.standard_normal((k, d))
        raw -= w @ raw
        if k > d:
            raw = raw @ np.linalg.inv(np.linalg.cholesky((raw * w[:, None]).T @ raw)).T
        else:
            raw /= np.sqrt(w @ raw**2)
        centroids = raw @ lower.T  # (k, d) latent cluster centres
        target = np.full(d, 0.5) if self.balance is None else np.asarray(self.balance, dtype=np.float64)
        # P(b_j = 1) = sum_k w_k Phi((c_kj + t_j) / s) rises with t_j: bisect every bit at once
        lo, hi = np.full(d, -10.0 * (1 + s)), np.full(d, 10.0 * (1 + s))
        for _ in range(60):
            mid = (lo + hi) / 2
            p = w @ _ndtr((centroids + mid) / s)
            below = p < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return {"w": w, "cdf": np.cumsum(w), "centroids": centroids, "lower": lower, "offset": (lo + hi) / 2}

    def _block(self, block: int, stream: int) -> np.ndarray:
        """The packed codes of one whole block (``BLOCK`` rows)."""
        m = self._model
        rng = np.random.default_rng([int(self.seed), int(stream), int(block)])
        k = np.minimum(np.searchsorted(m["cdf"], rng.random(BLOCK), side="right"), len(m["w"]) - 1)
        z = m["centroids"][k] + self.spread * (rng.standard_normal((BLOCK, self.bits)) @ m["lower"].T)
        return np.packbits(z + m["offset"] > 0, axis=1)

    # ------------------------------------------------------------------ sampling
    def rows(self, start: int, stop: int, stream: int = 0) -> np.ndarray:
        """Packed codes of rows ``[start, stop)`` of stream ``stream`` (uint8, ``bits/8`` bytes a row)."""
        if start < 0 or stop < start:
            raise InputError(f"ClusteredCodes.rows(): need 0 <= start <= stop, got {start}, {stop}")
        out = np.empty((stop - start, self.bits // 8), dtype=np.uint8)
        pos = start
        while pos < stop:
            b = pos // BLOCK
            a, e = pos - b * BLOCK, min(stop - b * BLOCK, BLOCK)
            out[pos - start : pos - start + e - a] = self._block(b, stream)[a:e]
            pos += e - a
        return out

    def sample(self, n: int, stream: int = 0) -> np.ndarray:
        """The first ``n`` codes of a stream (stream 0: a database; another stream: held-out queries)."""
        return self.rows(0, _count(n), stream)

    def iter_chunks(self, n: int, chunk: int = BLOCK, stream: int = 0) -> Iterator[np.ndarray]:
        """The first ``n`` codes in chunks of ``chunk`` rows (memory: one block of floats)."""
        n, chunk = _count(n), _count(chunk, "chunk", 1)
        for s in range(0, n, chunk):
            yield self.rows(s, min(s + chunk, n), stream)

    def write_npy(self, path: str | os.PathLike[str], n: int, stream: int = 0) -> Path:
        """Write the first ``n`` codes to a ``.npy`` file chunk by chunk, atomically."""
        from bitseek.atomic import atomic_path

        n = _count(n)
        with atomic_path(path) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, self.bits // 8))
            for s in range(0, n, BLOCK * 4):
                arr[s : s + BLOCK * 4] = self.rows(s, min(s + BLOCK * 4, n), stream)
            arr.flush()
            del arr
        return Path(path)

    def describe(self) -> dict[str, Any]:
        """The parameters as JSON-able values (for benchmark records)."""
        return {"bits": int(self.bits), "clusters": int(self.clusters), "spread": float(self.spread),
                "size_sigma": float(self.size_sigma), "seed": int(self.seed),
                "balance_fitted": self.balance is not None, "correlation_fitted": self.correlation is not None}


def _count(n: Any, name: str = "n", lo: int = 0) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < lo:
        raise InputError(f"ClusteredCodes: {name} must be an integer >= {lo}, got {n!r}")
    return int(n)


def _nearest_correlation(c: np.ndarray) -> np.ndarray:
    """Symmetrise, clip eigenvalues to a small positive floor and rescale to a unit diagonal."""
    c = (c + c.T) / 2
    vals, vecs = np.linalg.eigh(c)
    c = (vecs * np.maximum(vals, 1e-3)) @ vecs.T
    d = np.sqrt(np.diag(c))
    return c / d[:, None] / d[None, :]


def cached_codes(model: ClusteredCodes, n: int, cache_dir: str | os.PathLike[str], stream: int = 0) -> np.ndarray:
    """``model.sample(n, stream)`` read from (or first written to) a ``.npy`` cache, memory-mapped."""
    key = f"clustered-b{model.bits}-k{model.clusters}-s{model.spread:g}-z{model.size_sigma:g}-seed{model.seed}"
    if model.balance is not None or model.correlation is not None:
        import hashlib

        h = hashlib.sha256(np.asarray(model.balance or (), float).tobytes()
                           + np.asarray(model.correlation or (), float).tobytes()).hexdigest()[:12]
        key += f"-fit{h}"
    path = Path(cache_dir) / f"{key}-st{stream}-n{n}.npy"
    if not path.is_file():
        model.write_npy(path, n, stream)
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------------- statistics


def code_statistics(codes: Any, probes: int = 500, seed: int = 0) -> dict[str, Any]:
    """What the generator is fitted on and checked against, for packed codes.

    ``balance`` (share of 1s per bit), ``correlation`` (bit-bit Pearson matrix), ``nn1`` / ``nn10``
    (Hamming distance from ``probes`` random rows to their 1st / 10th nearest other row) and
    ``pairs`` (distances between those rows and every row: the all-pairs distribution).
    """
    p = check_packed(codes, "codes")
    n = p.shape[0]
    if n < 12:
        raise InputError(f"code_statistics(): need at least 12 codes, got {n}")
    bits = np.unpackbits(p, axis=1).astype(np.float64)
    bal = bits.mean(0)
    sd = bits.std(0)
    cov = (bits - bal).T @ (bits - bal) / n
    corr = cov / np.maximum(np.outer(sd, sd), 1e-12)
    np.fill_diagonal(corr, 1.0)
    rows = np.random.default_rng(seed).choice(n, size=min(probes, n), replace=False)
    dist = hamming(p[rows], p)
    dist[np.arange(rows.size), rows] = np.iinfo(np.int32).max  # a row is not its own neighbour
    part = np.partition(dist, 9, axis=1)
    nn1, nn10 = part[:, 0].astype(np.int64), part[:, 9].astype(np.int64)
    dist[np.arange(rows.size), rows] = -1
    pairs = dist[dist >= 0]
    return {"n": n, "bits": p.shape[1] * 8, "balance": bal, "correlation": corr, "nn1": nn1, "nn10": nn10, "pairs": pairs}


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance between two samples of integer distances (in bits)."""
    qs = np.linspace(0.005, 0.995, 199)
    return float(np.mean(np.abs(np.quantile(a, qs) - np.quantile(b, qs))))


def compare_statistics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """How far two :func:`code_statistics` results are apart (all in bits or plain units)."""
    off = ~np.eye(a["correlation"].shape[0], dtype=bool)
    ca, cb = a["correlation"][off], b["correlation"][off]
    return {
        "balance_max_abs": float(np.max(np.abs(a["balance"] - b["balance"]))),
        "correlation_rmse": float(np.sqrt(np.mean((ca - cb) ** 2))),
        "correlation_mean_abs": [float(np.mean(np.abs(ca))), float(np.mean(np.abs(cb)))],  # type: ignore[dict-item]
        "nn1_w1": _w1(a["nn1"], b["nn1"]),
        "nn10_w1": _w1(a["nn10"], b["nn10"]),
        "pairs_w1": _w1(a["pairs"], b["pairs"]),
        "nn1_median": [float(np.median(a["nn1"])), float(np.median(b["nn1"]))],  # type: ignore[dict-item]
        "nn10_median": [float(np.median(a["nn10"])), float(np.median(b["nn10"]))],  # type: ignore[dict-item]
    }


def _structure_loss(ref: dict[str, Any], got: dict[str, Any]) -> float:
    """Neighbour-distance mismatch in bits, plus the correlation error (weighted so that 0.05 of
    correlation RMSE costs one bit): a few very tight clusters can mimic the neighbour distances
    but not the bit correlations."""
    off = ~np.eye(ref["correlation"].shape[0], dtype=bool)
    corr = float(np.sqrt(np.mean((ref["correlation"][off] - got["correlation"][off]) ** 2)))
    return _w1(ref["nn1"], got["nn1"]) + _w1(ref["nn10"], got["nn10"]) + _w1(ref["pairs"], got["pairs"]) + 20 * corr


def fit_clustered(
    codes: Any,
    clusters: tuple[int, ...] = (16, 64, 256, 1024, 4096),
    spreads: tuple[float, ...] = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4),
    seed: int = 0,
    probes: int = 500,
) -> tuple[ClusteredCodes, dict[str, Any]]:
    """Fit :class:`ClusteredCodes` to real packed codes; returns the model and the fit record.

    Balance is matched exactly (calibrated offsets), the latent correlation by inverting the
    arcsine law and then two correction steps on a sample, and ``clusters`` x ``spread`` by a grid
    search minimising the neighbour-distance (and correlation) mismatch at the reference set's own size.
    """
    p = check_packed(codes, "codes")
    n, bits = p.shape[0], p.shape[1] * 8
    if n < 200:
        raise InputError(f"fit_clustered(): need at least 200 reference codes to fit neighbour structure, got {n}")
    ref = code_statistics(p, probes, seed)
    bal = tuple(float(x) for x in np.clip(ref["balance"], 0.01, 0.99))
    rho = np.sin(np.pi / 2 * ref["correlation"])
    grid = []
    best: tuple[float, ClusteredCodes] | None = None
    for k in clusters:
        for s in spreads:
            m = ClusteredCodes(bits, int(k), float(s), balance=bal, correlation=_as_tuple(rho), seed=seed)
            loss = _structure_loss(ref, code_statistics(m.sample(n), probes, seed))
            grid.append({"clusters": int(k), "spread": float(s), "loss": loss})
            if best is None or loss < best[0]:
                best = (loss, m)
    assert best is not None
    model = best[1]
    # the mixture is not Gaussian, so the arcsine inversion is only close: correct it on samples
    for _ in range(2):
        got = code_statistics(model.sample(max(n, 20000)), probes, seed)
        rho = np.clip(rho + np.sin(np.pi / 2 * ref["correlation"]) - np.sin(np.pi / 2 * got["correlation"]), -0.99, 0.99)
        np.fill_diagonal(rho, 1.0)
        model = replace(model, correlation=_as_tuple(rho))
    final = compare_statistics(ref, code_statistics(model.sample(n), probes, seed))
    return model, {"reference_n": n, "grid": grid, "chosen": model.describe(), "fit": final}


def _as_tuple(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in m)
