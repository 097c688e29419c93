"""Iterative Quantization (Gong & Lazebnik, CVPR 2011 / TPAMI 2013)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.models.shallow.base import ShallowConfig, ShallowHash, moments, need_dims, pooled_chunks, signs, top_eigvecs
from bitseek.registry import register_model

__all__ = ["ITQ", "ITQConfig", "build_itq"]


@dataclass
class ITQConfig(ShallowConfig):
    """ITQ: PCA to ``bits`` dimensions, then ``iterations`` rotation updates (the paper uses 50)."""

    name: str = "itq"
    iterations: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 0:
            raise ConfigError(f"model.iterations must be >= 0, got {self.iterations}")


class ITQ(ShallowHash):
    """PCA to ``bits`` dims, then the rotation R minimising ||B - VR||_F.

    Alternates B = sign(VR) and the orthogonal Procrustes step: with the SVD BᵀV = S Ω Ŝᵀ, the best
    rotation is R = Ŝ Sᵀ. Each half-step cannot increase the loss, so ``loss_history`` (the
    quantisation loss after each iteration) is non-increasing.
    """

    def __init__(self, cfg: ShallowConfig) -> None:
        super().__init__(cfg)
        self.iterations = int(getattr(cfg, "iterations", 50))
        self.loss_history: list[float] = []
        self.rotation: np.ndarray | None = None

    def _fit(self, features: Any) -> None:
        n, mean, cov = moments(features)
        need_dims("itq", self.bits, mean.shape[0], n)
        w = top_eigvecs(cov, self.bits)
        v = np.concatenate([(x - mean) @ w for x in pooled_chunks(features)])  # (N, bits)
        rng = np.random.default_rng(self.cfg.seed)
        r, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.loss_history = []
        for _ in range(self.iterations):
            b = signs(v @ r)
            s, _, sht = np.linalg.svd(b.T @ v)
            r = sht.T @ s.T
            self.loss_history.append(float(np.square(b - v @ r).sum()))
        self.rotation = r
        self.state = {"mean": mean, "proj": w @ r}

    def quantization_loss(self, features: Any) -> float:
        """||sign(V R) - V R||_F² of ``features`` under the fitted PCA + rotation."""
        if not self._fitted:
            raise InputError("itq: quantization_loss() before fit()")
        total = 0.0
        for x in pooled_chunks(features):
            y = (x - self.state["mean"].astype(np.float64)) @ self.state["proj"].astype(np.float64)
            total += float(np.square(signs(y) - y).sum())
        return total


@register_model("itq", ITQConfig)
def build_itq(cfg: ITQConfig) -> ITQ:
    """Iterative Quantization: PCA, then a learned rotation minimising quantisation loss."""
    return ITQ(cfg)
