"""PCA hashing: the sign of the projections on the top-``bits`` principal directions."""

from __future__ import annotations

from typing import Any

from bitseek.models.shallow.base import ShallowConfig, ShallowHash, moments, need_dims, top_eigvecs
from bitseek.registry import register_model

__all__ = ["PCAH", "build_pcah"]


class PCAH(ShallowHash):
    """sign((x - mean) @ W) for the top-``bits`` eigenvectors W of the training covariance."""

    def _fit(self, features: Any) -> None:
        n, mean, cov = moments(features)
        need_dims("pcah", self.bits, mean.shape[0], n)
        self.state = {"mean": mean, "proj": top_eigvecs(cov, self.bits)}


@register_model("pcah", ShallowConfig)
def build_pcah(cfg: ShallowConfig) -> PCAH:
    """PCA hashing: signs of the top-``bits`` principal projections."""
    return PCAH(cfg)
