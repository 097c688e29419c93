"""Rendering clips from their recipes: resized digit glyphs pasted along their paths, plus noise.

Pixel frames are never stored; a clip's recipe (source image, size, per-frame position, shot) is,
and :func:`render_clips` re-renders exactly the frames the features were computed from.
"""

from __future__ import annotations

import math

import numpy as np

from bitseek.data.embedded.common import resize_matrix
from bitseek.data.embedded.moving_mnist.config import SPLIT_CODES

__all__ = ["glyphs", "pixel_noise", "render_clips"]

NOISE_BLOCK = 64  # clips per noise stream: vectorised generation, yet any clip re-renders alone


def glyphs(images: np.ndarray, src: np.ndarray, side: np.ndarray, pad: int) -> np.ndarray:
    """Resized digit images (m, pad, pad), each in the top-left corner of a zero square."""
    out = np.zeros((src.size, pad, pad), dtype=np.float32)
    for sd in np.unique(side).tolist():
        sel = np.flatnonzero(side == sd)
        a = resize_matrix(images.shape[-1], sd)
        g = np.einsum("ij,njk,lk->nil", a, images[src[sel]].astype(np.float64), a, optimize=True)
        out[sel, :sd, :sd] = np.clip(g, 0.0, 1.0)
    return out


def render_clips(images: np.ndarray, recipe: dict[str, np.ndarray], canvas: int, noise: float,
                 seed: int, split: str, first_index: int) -> np.ndarray:
    """Float32 frames (n, T, canvas, canvas) in [0, 1] of the clips described by ``recipe``.

    Overlapping digits combine by maximum (as in Moving MNIST). Each slot is pasted into every
    frame that shows it with one scatter (a slot holds at most one digit per frame, so no index
    repeats); frame ``t`` of clip ``i`` takes the glyph of its shot ``shot[i, t]``. Pixel noise
    (uniform, zero mean, std ``noise``) comes in fixed blocks of clips, so any clip can be
    re-rendered alone, identically.
    """
    src, size, pos, shot = recipe["src_image"], recipe["size_px"], recipe["pos"], recipe["shot"]
    n, t_frames = pos.shape[0], pos.shape[1]
    big = int(size.max()) if size.size else 1
    side = canvas + big  # margin so that zero-padded glyph squares never leave the work canvas
    work = np.zeros((n, t_frames, side, side), dtype=np.float32)
    flat = work.reshape(-1)
    ar = np.arange(big)
    offsets = (ar[:, None] * side + ar[None, :]).reshape(-1)
    shot = shot.astype(np.int64)
    frame_src = np.take_along_axis(src, shot[:, :, None], axis=1)  # (n, T, slot)
    for k in range(src.shape[2]):
        clip_i, shot_i = np.nonzero(src[:, :, k] >= 0)
        if clip_i.size == 0:
            continue
        glyph = glyphs(images, src[clip_i, shot_i, k], size[clip_i, shot_i, k].astype(np.int64), big)
        row = np.full(src.shape[:2], -1, dtype=np.int64)
        row[clip_i, shot_i] = np.arange(clip_i.size)
        fc, ft = np.nonzero(frame_src[:, :, k] >= 0)  # frames that show slot k
        corner = pos[fc, ft, k, 0].astype(np.int64) * side + pos[fc, ft, k, 1].astype(np.int64)
        lin = (((fc * t_frames + ft) * (side * side) + corner)[:, None] + offsets[None, :]).reshape(-1)
        flat[lin] = np.maximum(flat[lin], glyph.reshape(clip_i.size, -1)[row[fc, shot[fc, ft]]].reshape(-1))
    out = np.ascontiguousarray(work[:, :, :canvas, :canvas])
    if noise > 0:
        out += noise * pixel_noise(seed, split, first_index, n, out.shape[1:])
        np.clip(out, 0.0, 1.0, out=out)
    return out


def pixel_noise(seed: int, split: str, first: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise of clips first..first+n-1, one stream per block of clips.

    Block-wise streams keep generation vectorised yet let a single clip be re-rendered alone
    (it regenerates only its own block).
    """
    out = np.empty((n, *shape), dtype=np.float32)
    b0, b1 = first // NOISE_BLOCK, (first + n - 1) // NOISE_BLOCK
    for b in range(b0, b1 + 1):
        rng = np.random.default_rng([int(seed), SPLIT_CODES[split], 7919, b])
        block = rng.random((NOISE_BLOCK, *shape), dtype=np.float32)
        block = (block - np.float32(0.5)) * np.float32(math.sqrt(12.0))  # uniform on ±√3: std 1
        lo, hi = max(first, b * NOISE_BLOCK), min(first + n, (b + 1) * NOISE_BLOCK)
        out[lo - first: hi - first] = block[lo - b * NOISE_BLOCK: hi - b * NOISE_BLOCK]
    return out


