"""Fixed class hash centres, as in CSQ (Yuan et al., CVPR 2020) and the released CSCE-Net code.

* ``num_classes <= 2 * bits`` and ``bits`` a power of two: the first ``num_classes`` rows of
  ``[H; -H]`` for the Sylvester Hadamard matrix ``H`` (bits x bits). Any two rows are at Hamming
  distance ``bits / 2`` (or ``bits`` for a row and its negation).
* more classes: the Hadamard rows first, then random balanced codes (``bits // 2`` entries -1) for
  the remaining classes, re-drawn up to ``max_tries`` times until the minimum pairwise distance is
  ``> bits / 4`` and the mean is ``>= bits / 2`` (CSQ's conditions).
* ``bits`` not a power of two (no Sylvester Hadamard matrix): random balanced codes for every class
  under the same conditions — our documented fallback (CSQ's Bernoulli centres).

Unlike the reference (unseeded ``random.sample``; silently keeps the last draw when no draw meets
the conditions) the draw here is deterministic by ``seed``, and if no draw meets the conditions the
best draw (largest minimum distance, then mean) is kept with a warning that gives its statistics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import hadamard

from bitseek.errors import ConfigError

__all__ = ["HashCenters", "hadamard_centers", "make_hash_centers", "pairwise_distance_stats", "random_balanced_codes"]


@dataclass(frozen=True)
class HashCenters:
    """Centres (num_classes, bits) float32 ±1 and how they were made."""

    codes: torch.Tensor
    method: str  # "hadamard" | "hadamard+random" | "random"
    min_distance: int
    mean_distance: float
    satisfied: bool  # CSQ's conditions hold (always true for pure Hadamard rows)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def hadamard_centers(bits: int) -> np.ndarray:
    """``[H; -H]``: 2·bits mutually far ±1 codes (bits must be a power of two)."""
    if not _is_power_of_two(bits):
        raise ConfigError(f"hadamard centres need bits to be a power of two, got {bits}")
    h = hadamard(bits).astype(np.float32)
    return np.concatenate([h, -h], axis=0)


def random_balanced_codes(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` ±1 codes with exactly ``bits // 2`` entries -1 each, at random positions."""
    order = rng.random((n, bits)).argsort(axis=1)
    codes = np.ones((n, bits), dtype=np.float32)
    np.put_along_axis(codes, order[:, : bits // 2], -1.0, axis=1)
    return codes


def pairwise_distance_stats(codes: np.ndarray, chunk: int = 2048) -> tuple[int, float]:
    """(minimum, mean) Hamming distance over all pairs i < j of ±1 codes, in bounded memory."""
    c = np.asarray(codes, dtype=np.float32)
    n, bits = c.shape
    if n < 2:
        return bits, float(bits)
    # mean: sum_{i<j} c_i.c_j = (|sum c|^2 - sum |c_i|^2) / 2, no n x n matrix needed
    s = c.sum(axis=0)
    dot_sum = (float(s @ s) - float((c * c).sum())) / 2.0
    n_pairs = n * (n - 1) / 2.0
    mean = (bits * n_pairs - dot_sum) / 2.0 / n_pairs
    best = bits
    for start in range(0, n, chunk):
        block = c[start:start + chunk]
        d = (bits - block @ c.T) / 2.0  # (chunk, n)
        rows = np.arange(start, start + len(block))
        mask = np.arange(n)[None, :] > rows[:, None]  # pairs i < j only
        if mask.any():
            best = min(best, int(round(float(d[mask].min()))))
    return best, float(mean)


def make_hash_centers(num_classes: int, bits: int, seed: int = 0, max_tries: int = 20) -> HashCenters:
    """Deterministic CSQ-style centres for ``num_classes`` classes and ``bits``-bit codes."""
    if num_classes < 1 or bits < 2:
        raise ConfigError(f"hash centres: need num_classes >= 1 and bits >= 2, got {num_classes}, {bits}")
    if max_tries < 1:
        raise ConfigError(f"hash centres: max_tries must be >= 1, got {max_tries}")
    if _is_power_of_two(bits):
        fixed = hadamard_centers(bits)[:num_classes]
    else:
        fixed = np.zeros((0, bits), dtype=np.float32)
    n_random = num_classes - len(fixed)
    if n_random == 0:
        d_min, d_mean = pairwise_distance_stats(fixed)
        return HashCenters(torch.from_numpy(fixed.copy()), "hadamard", d_min, d_mean, True)
    rng = np.random.default_rng(seed)
    best: tuple[int, float, np.ndarray] | None = None
    for _ in range(max_tries):
        codes = np.concatenate([fixed, random_balanced_codes(n_random, bits, rng)], axis=0)
        d_min, d_mean = pairwise_distance_stats(codes)
        if best is None or (d_min, d_mean) > best[:2]:
            best = (d_min, d_mean, codes)
        if d_min > bits / 4 and d_mean >= bits / 2:
            break
    assert best is not None
    d_min, d_mean, codes = best
    ok = d_min > bits / 4 and d_mean >= bits / 2
    method = "hadamard+random" if len(fixed) else "random"
    if not ok:
        warnings.warn(f"hash centres for {num_classes} classes at {bits} bits: no draw in {max_tries} met CSQ's "
                      f"conditions (min distance > {bits / 4:g}, mean >= {bits / 2:g}); using the best draw "
                      f"(min {d_min}, mean {d_mean:.2f})", RuntimeWarning, stacklevel=2)
    return HashCenters(torch.from_numpy(codes), method, d_min, d_mean, ok)
