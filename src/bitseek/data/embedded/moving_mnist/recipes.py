"""Clip recipes: which digit images a clip shows, cut into which shots, at what size and position.

Everything is drawn from numpy generators in whole-split vectorised calls, so a recipe depends only
on the seed and the parameters, never on how the frames are later rendered.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from bitseek.data.embedded.moving_mnist.config import NUM_CLASSES, MovingMnistConfig
from bitseek.errors import ConfigError

__all__ = ["sample_recipes", "split_images"]


def split_images(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint per-class shares of the source images for train / query / database."""
    pools: list[list[np.ndarray]] = [[], [], []]
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_tr = int(round(fractions[0] * idx.size))
        n_q = int(round(fractions[1] * idx.size))
        parts = (idx[:n_tr], idx[n_tr: n_tr + n_q], idx[n_tr + n_q:])
        for pool, part in zip(pools, parts):
            if part.size == 0:
                raise ConfigError(f"mnist-video.split={list(fractions)} leaves no image of digit {c} in a split")
            pool.append(np.sort(part))
    return [np.concatenate(p) for p in pools]


def sample_recipes(n: int, pool: np.ndarray, labels: np.ndarray, cfg: MovingMnistConfig,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Digits, shots, sizes and bouncing trajectories of ``n`` clips, all vectorised.

    A clip's digit classes are drawn once; every shot then draws its own images of those classes
    (other writers), sizes and trajectories, as if the clip were cut from a longer video. Shot
    ``j`` of clip ``i`` is sub-clip ``i * S + j`` (S = ``shots_max``) of one vectorised draw, and
    frame ``t`` shows sub-clip ``shot[i, t]`` at time ``t``. With ``shots_max == 1`` no shot
    cut is drawn, so the random streams, and the clips, are those of one continuous shot.
    """
    t_frames, n_shots = cfg.frames, cfg.shots_max
    two = rng.random(n) < cfg.p_two
    c1 = rng.integers(0, NUM_CLASSES, n)
    c2 = (c1 + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES
    digits = np.stack([c1, np.where(two, c2, -1)], axis=1)
    motion = _sample_motion(np.repeat(digits, n_shots, axis=0), pool, labels, cfg, rng)
    shot = _sample_shots(n, cfg, rng)
    sub = np.arange(n)[:, None] * n_shots + shot  # (n, T) sub-clip shown by each frame
    pos = motion["pos"][sub, np.arange(t_frames)[None, :]]  # (n, T, slot, 2)
    return {"digits": digits.astype(np.int8),
            "src_image": motion["src_image"].reshape(n, n_shots, 2).astype(np.int32),
            "size_px": motion["size_px"].reshape(n, n_shots, 2).astype(np.int16),
            "shot": shot.astype(np.int8), "pos": pos}


def _sample_motion(digits: np.ndarray, pool: np.ndarray, labels: np.ndarray, cfg: MovingMnistConfig,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Source images, sizes and (T, slot, 2) bouncing positions of one sub-clip per row of ``digits``."""
    n, t_frames, canvas = digits.shape[0], cfg.frames, cfg.canvas
    pool_labels = labels[pool]
    order = np.argsort(pool_labels, kind="stable")
    by_class = pool[order]
    counts = np.bincount(pool_labels, minlength=NUM_CLASSES)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cls = np.maximum(digits, 0)
    pick = starts[cls] + np.floor(rng.random((n, 2)) * counts[cls]).astype(np.int64)
    src = np.where(digits >= 0, by_class[pick], -1)
    scale = rng.uniform(cfg.scale_min, cfg.scale_max, (n, 2))
    size = np.clip(np.round(scale * canvas), 4, canvas).astype(np.int64)
    room = (canvas - size).astype(np.float64)  # (n, 2) free travel per axis
    p0 = rng.random((n, 2, 2)) * room[:, :, None]
    theta = rng.uniform(0.0, 2.0 * math.pi, (n, 2))
    speed = rng.uniform(cfg.speed_min, cfg.speed_max, (n, 2))
    vel = speed[:, :, None] * np.stack([np.sin(theta), np.cos(theta)], axis=2)  # (n, slot, (y, x))
    t = np.arange(t_frames, dtype=np.float64)
    p = p0[:, None] + vel[:, None] * t[None, :, None, None]  # (n, T, slot, 2)
    span = np.broadcast_to(room[:, None, :, None], p.shape)
    safe = np.where(span > 0, span, 1.0)
    m = np.mod(p, 2.0 * safe)
    p = np.where(span > 0, safe - np.abs(m - safe), 0.0)  # reflect off the walls
    return {"src_image": src, "size_px": size, "pos": np.round(p).astype(np.int16)}


def _sample_shots(n: int, cfg: MovingMnistConfig, rng: np.random.Generator) -> np.ndarray:
    """(n, T) shot index of every frame: S ~ U{shots_min..shots_max} shots (at most T) cut at distinct frames."""
    t_frames, n_max = cfg.frames, cfg.shots_max
    if n_max == 1:
        return np.zeros((n, t_frames), dtype=np.int64)
    count = np.minimum(rng.integers(cfg.shots_min, n_max + 1, n), t_frames)
    k = min(n_max, t_frames) - 1
    cuts = np.argsort(rng.random((n, t_frames - 1)), axis=1)[:, :k] + 1  # distinct, in 1..T-1
    used = np.arange(k)[None, :] < (count - 1)[:, None]
    cuts = np.where(used, np.sort(np.where(used, cuts, t_frames), axis=1), t_frames)
    return (cuts[:, None, :] <= np.arange(t_frames)[None, :, None]).sum(axis=2)

