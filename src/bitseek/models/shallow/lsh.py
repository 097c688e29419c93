"""Random-hyperplane LSH (SimHash, Charikar 2002) on zero-centred vectors."""

from __future__ import annotations

from typing import Any

import numpy as np

from bitseek.errors import InputError
from bitseek.models.shallow.base import ShallowConfig, ShallowHash, pooled_chunks
from bitseek.registry import register_model

__all__ = ["LSH", "build_lsh"]


class LSH(ShallowHash):
    """sign((x - mean) @ W), W ~ N(0, 1) drawn from ``seed``."""

    def _fit(self, features: Any) -> None:
        n, total = 0, None
        for x in pooled_chunks(features):
            s = x.sum(axis=0)
            total = s if total is None else total + s
            n += x.shape[0]
        if total is None or n == 0:
            raise InputError("lsh: fit() got no training vectors")
        rng = np.random.default_rng(self.cfg.seed)
        self.state = {"mean": total / n, "proj": rng.standard_normal((total.shape[0], self.bits))}


@register_model("lsh", ShallowConfig)
def build_lsh(cfg: ShallowConfig) -> LSH:
    """Random-hyperplane LSH (SimHash) on zero-centred vectors."""
    return LSH(cfg)
