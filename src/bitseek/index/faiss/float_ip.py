"""Exact inner-product search over real-valued descriptors (CVNet-style global descriptors).

Vectors live in a faiss ``IndexFlatIP`` (so the payload of a saved file is a plain faiss index, and
removal compacts in order). Scores are computed here as one BLAS matrix product per query block and
selected by ``bitseek.index.selection``, because faiss's float heaps leave the order of equal
scores — and which tied items make the top-k — unspecified; this keeps the documented tie rule.
Distances are similarities, largest first; L2-normalise descriptors beforehand for cosine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.api import PAD_SIMILARITY, to_numpy
from bitseek.index.faiss.base import FaissIndex
from bitseek.index.faiss.validate import PayloadInfo, inspect_float
from bitseek.index.selection import rows_at_least, topk_largest

__all__ = ["FloatIPIndex"]

_BLOCK_ELEMENTS = 1 << 22  # scores per query block: bounds temporary memory to ~60 MB


class FloatIPIndex(FaissIndex):
    """``float-ip``: exact maximum-inner-product search; needs ``dim``."""

    engine = "float-ip"
    metric = "ip"
    exact = True
    name_patterns = (r"float-ip",)
    pad_distance = PAD_SIMILARITY

    def __init__(
        self, dim: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None, **kw: Any
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ConfigError(f"float-ip index: dim must be a positive integer, got {dim!r}")
        super().__init__(int(dim), params, options, **kw)

    def _build(self) -> None:
        self._faiss = faiss.IndexFlatIP(self.dim)

    def _name(self) -> str:
        return "float-ip"

    def _coerce(self, x: Any, name: str) -> np.ndarray:
        a = to_numpy(x)
        if a.ndim != 2:
            raise InputError(f"{name}: expected a 2-D array (n, {self.dim}), got shape {a.shape}")
        if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InputError(f"{name}: descriptors must be real numbers, got dtype {a.dtype}")
        if a.shape[1] != self.dim:
            raise InputError(f"{name}: {a.shape[1]} columns, the index holds {self.dim}-d descriptors")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"{name}: descriptors contain NaN or inf")
        return a

    def _check_radius(self, radius: Any) -> float:
        if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)):
            raise InputError(f"range_search(): radius (similarity threshold) must be a number, got {radius!r}")
        if not np.isfinite(radius):
            raise InputError(f"range_search(): radius must be finite, got {radius!r}")
        return float(np.float32(radius))

    def _vectors(self) -> np.ndarray:
        """Zero-copy view of the stored vectors; valid until the next add/remove (callers hold the lock)."""
        n = int(self._faiss.ntotal)
        return faiss.rev_swig_ptr(self._faiss.get_xb(), n * self.dim).reshape(n, self.dim)

    @staticmethod
    def _block_rows(n: int) -> int:
        """Queries per block so that a block's score matrix stays near ``_BLOCK_ELEMENTS``."""
        return max(1, _BLOCK_ELEMENTS // max(n, 1))

    def _knn(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        x = self._vectors()
        dist = np.empty((q.shape[0], k), dtype=np.float32)
        labels = np.empty((q.shape[0], k), dtype=np.int64)
        step = self._block_rows(x.shape[0])
        for s in range(0, q.shape[0], step):
            dist[s : s + step], labels[s : s + step] = topk_largest(q[s : s + step] @ x.T, k, PAD_SIMILARITY)
        return dist, labels

    def _range(self, q: np.ndarray, radius: float, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self._vectors()
        rows, cols, scores = [], [], []
        step = self._block_rows(x.shape[0])
        for s in range(0, q.shape[0], step):
            r, c, v = rows_at_least(q[s : s + step] @ x.T, radius)
            rows.append(r + s)
            cols.append(c)
            scores.append(v)
        r = np.concatenate(rows)
        lims = np.zeros(q.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=q.shape[0]), out=lims[1:])
        return lims, np.concatenate(scores).astype(np.float32), np.concatenate(cols)

    def _serialize(self) -> np.ndarray:
        return faiss.serialize_index(self._faiss)

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        return inspect_float(buf)

    def _restore_faiss(self, buf: np.ndarray, info: PayloadInfo) -> None:
        idx = faiss.deserialize_index(np.ascontiguousarray(buf))
        if not isinstance(idx, faiss.IndexFlatIP):
            raise InputError(f"payload is a {type(idx).__name__}, a float-ip index holds IndexFlatIP")
        if int(idx.d) != self.dim:
            raise InputError(f"payload holds {idx.d}-d vectors, the header says {self.dim}")
        self._faiss = idx
