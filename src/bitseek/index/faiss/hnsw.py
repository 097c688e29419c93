"""Graph search on Hamming codes (faiss ``IndexBinaryHNSW``): low latency k-NN, approximate.

The graph costs about ``2·M`` int32 neighbours per code at level 0 (for M=32, 256 bytes against 8
bytes for a 64-bit code) and builds slowly, so it suits long codes and moderate collections.
``ef_search`` goes to faiss per call (``SearchParametersHNSW``), raised to at least k (faiss would
otherwise return fewer than k rows). faiss binary HNSW has no range search: ``range_search`` grows
a k-NN search until the k-th hit leaves the radius.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.faiss.tombstones import TombstoneIndex
from bitseek.index.faiss.validate import PayloadInfo, inspect_binary

__all__ = ["BinaryHNSWIndex"]


class BinaryHNSWIndex(TombstoneIndex):
    """``hnsw{M}`` with options ``ef_search`` (default 64) and ``ef_construction`` (default 40)."""

    engine = "hnsw"
    sort_ties = True
    exact = False
    name_patterns = (r"hnsw(?P<m>[0-9]+)",)
    options_spec = {"ef_search": (64, 1), "ef_construction": (40, 1)}
    search_params = {"ef_search": 1}
    faiss_type = faiss.IndexBinaryHNSW

    def __init__(
        self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None, **kw: Any
    ) -> None:
        m = int((params or {}).get("m", 0))
        if m < 2:
            raise ConfigError(f"hnsw index: M must be >= 2, got {m}")
        super().__init__(bits, {"m": m}, options, **kw)

    def _build(self) -> None:
        self._faiss = faiss.IndexBinaryHNSW(self.bits, self.params["m"])

    def _name(self) -> str:
        return f"hnsw{self.params['m']}"

    def _apply_options(self) -> None:
        self._faiss.hnsw.efSearch = self._options["ef_search"]
        self._faiss.hnsw.efConstruction = self._options["ef_construction"]

    def _knn(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(opts["ef_search"], k)
        return self._faiss.search(q, k, params=params)

    def _range(self, q: np.ndarray, radius: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = int(self._faiss.ntotal)
        k = min(n, 64)
        rows = np.arange(q.shape[0])
        got_q, got_d, got_l = [], [], []
        while rows.size:
            dist, labels = self._knn(np.ascontiguousarray(q[rows]), k, opts)
            inside = (dist <= radius) & (labels >= 0)
            more = inside[:, -1] & (k < n)  # the k-th hit is still inside: there may be more
            done = np.flatnonzero(~more)
            r, c = np.nonzero(inside[done])
            got_q.append(rows[done][r])
            got_d.append(dist[done][r, c])
            got_l.append(labels[done][r, c])
            rows, k = rows[more], min(2 * k, n)
        qi = np.concatenate(got_q)
        order = np.argsort(qi, kind="stable")
        lims = np.zeros(q.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(qi, minlength=q.shape[0]), out=lims[1:])
        return lims, np.concatenate(got_d)[order].astype(np.int32), np.concatenate(got_l)[order].astype(np.int64)

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        info = inspect_binary(buf)
        if info.fourcc != "IBHf":
            raise InputError(f"payload is a {info.fourcc} index, an hnsw index holds IBHf")
        return info

    @classmethod
    def _header_params(cls, params: dict[str, Any], info: PayloadInfo) -> dict[str, Any]:
        out = super()._header_params(params, info)
        if info.ntotal and out.get("m") != info.fields["m"]:
            raise InputError(f"header says M={out.get('m')}, the payload graph has M={info.fields['m']}")
        return out
