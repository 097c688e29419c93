"""The frame feature of ``mnist-video``: a *fixed random-weight CNN with global pooling*.

The real benchmarks describe each frame by a global CNN activation (VGG fc7 on FCVID/YFCC, ResNet-50
pool5 on ActivityNet): non-negative ReLU outputs of order one, pooled over the whole image, hence
largely blind to *where* things are. The descriptor copies those properties with a LeNet-sized
network: conv 5×5 stride 2 (1→8 channels) → ReLU → 2×2 max-pool (a ResNet-style stem, total stride
4) → conv 3×3 (8→128) → ReLU → global average pooling (as ResNet pool5) concatenated with global max
pooling (as MAC) → 256 dims. Filters are He-normal draws from a fixed seed and never trained;
random-filter CNNs are a known, surprisingly strong fixed descriptor (Jarrett et al. ICCV 2009, Saxe
et al. ICML 2011). Each pooled half is scaled to unit RMS per frame (parameter-free), so values are
order one as in real activations and neither pooling dominates by scale. A shift by a multiple of the
stride (4 px) that keeps the digits inside the canvas leaves the feature exactly unchanged; other
shifts alias (as in real CNNs), but averaged over a clip's positions the digit dominates. The channel
counts (8 and 128; LeNet-5 used 6 and 16) keep the whole benchmark's 120,000 frames at seconds of
CPU time. Why a global descriptor and not the position-bound one tried first: docs/datasets.md.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from bitseek.data.embedded.moving_mnist.config import STRIDE
from bitseek.errors import InputError

__all__ = ["CONV1_CHANNELS", "CONV1_KERNEL", "CONV2_CHANNELS", "CONV2_KERNEL", "DESCRIPTION", "DESCRIPTOR_SEED",
           "FEATURE_DIM", "STRIDE", "descriptor_weights", "frame_descriptor"]

DESCRIPTOR_SEED = 20251123  # seeds the frozen filters; part of the generator version, not a parameter
CONV1_KERNEL, CONV1_CHANNELS = 5, 8  # stride 2, then 2×2 max-pool: overall stride 4, like a ResNet stem
CONV2_KERNEL, CONV2_CHANNELS = 3, 128
FEATURE_DIM = 2 * CONV2_CHANNELS  # global average ++ global max pooling: 256
DESCRIPTION = (f"fixed random CNN (seed {DESCRIPTOR_SEED}): conv{CONV1_KERNEL}x{CONV1_KERNEL}/2 "
               f"1->{CONV1_CHANNELS}, relu, maxpool2, conv{CONV2_KERNEL}x{CONV2_KERNEL} "
               f"{CONV1_CHANNELS}->{CONV2_CHANNELS}, relu, global avg ++ max, each unit RMS")


@functools.lru_cache(maxsize=1)
def descriptor_weights() -> tuple[torch.Tensor, torch.Tensor]:
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
    w1, w2 = descriptor_weights()
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

