"""Spectral Hashing (Weiss, Torralba & Fergus, NIPS 2008)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bitseek.errors import InputError
from bitseek.models.shallow.base import ShallowConfig, ShallowHash, moments, top_eigvecs, pooled_chunks
from bitseek.registry import register_model

__all__ = ["SpectralHashing", "build_sh"]


class SpectralHashing(ShallowHash):
    """PCA, a box per direction, the lowest-frequency 1-D Laplacian eigenfunctions.

    Bit k thresholds cos(m_k π (y_{j_k} - a_{j_k}) / (b_{j_k} - a_{j_k})) (= sin(π/2 + …)), where
    (j_k, m_k) are the ``bits`` (direction, mode) pairs with the smallest (m / (b - a))², the
    constant mode excluded; [a, b] is the range of the training projections.
    """

    state_keys = ("mean", "proj", "low", "span", "dims", "freqs")

    def _state_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        k = min(self.bits, dim)
        return {"mean": (dim,), "proj": (dim, k), "low": (k,), "span": (k,), "dims": (self.bits,),
                "freqs": (self.bits,)}

    def _fit(self, features: Any) -> None:
        n, mean, cov = moments(features)
        npca = min(self.bits, mean.shape[0])
        w = top_eigvecs(cov, npca)
        lo = np.full(npca, np.inf)
        hi = np.full(npca, -np.inf)
        for x in pooled_chunks(features):
            y = (x - mean) @ w
            lo, hi = np.minimum(lo, y.min(axis=0)), np.maximum(hi, y.max(axis=0))
        eps = np.finfo(np.float64).eps
        lo, hi = lo - eps, hi + eps
        span = np.maximum(hi - lo, 1e-12)
        # candidate modes 1..max_mode per direction, longer directions allowed more modes
        max_mode = np.ceil((self.bits + 1) * span / span.max()).astype(np.int64)
        dims = np.concatenate([np.full(m, j) for j, m in enumerate(max_mode)])
        modes = np.concatenate([np.arange(1, m + 1) for m in max_mode])
        eig = (modes / span[dims]) ** 2  # ∝ Laplacian eigenvalue of mode m on direction j
        order = np.argsort(eig, kind="stable")[: self.bits]
        if order.size < self.bits:
            raise InputError(f"sh: only {order.size} modes available for {self.bits} bits")
        self.state = {"mean": mean, "proj": w, "low": lo, "span": span,
                      "dims": dims[order].astype(np.int64), "freqs": modes[order].astype(np.float32)}

    def _project(self, x: Tensor, st: dict[str, Tensor]) -> Tensor:
        y = (x - st["mean"]) @ st["proj"]
        d = st["dims"]
        return torch.cos(st["freqs"] * math.pi * (y[:, d] - st["low"][d]) / st["span"][d])


@register_model("sh", ShallowConfig)
def build_sh(cfg: ShallowConfig) -> SpectralHashing:
    """Spectral Hashing: thresholded low-frequency Laplacian eigenfunctions along PCA directions."""
    return SpectralHashing(cfg)
