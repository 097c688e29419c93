"""Multi-index hashing (Norouzi et al., CVPR 2012) via faiss ``IndexBinaryMultiHash``.

The code is cut into ``nhash`` disjoint substrings of ``b`` bits, each the key of a hash table; a
query visits, in every table, the buckets within ``nflip`` bit flips of its own substring and verifies
the candidates with exact Hamming distances. By the pigeonhole principle an item within distance r of
the query matches it on at least one substring within ``r // nhash`` flips, so range search with
``nflip >= r // nhash`` is **exact**. k-NN stays approximate (only candidates within ``nflip`` flips
are ranked; rows may come back padded).

faiss MultiHash takes no per-call parameters, so: a range search whose ``r // nhash`` exceeds the
index's ``nflip`` scans the flat storage instead (exact, the same hits, nothing shared is changed);
a k-NN search with an ``nflip`` other than the index's own is the one call in the index layer that
runs exclusively (write lock), because faiss can only read ``nflip`` from the shared object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.faiss.tombstones import TombstoneIndex
from bitseek.index.faiss.validate import PayloadInfo, inspect_binary

__all__ = ["MultiHashIndex"]


class MultiHashIndex(TombstoneIndex):
    """``mih{nhash}`` (b = bits / nhash) or ``multihash{nhash}x{b}``, option ``nflip`` (default 1)."""

    engine = "multihash"
    sort_ties = True
    exact = False  # k-NN; range search is exact
    name_patterns = (r"mih(?P<nhash>[0-9]+)", r"multihash(?P<nhash>[0-9]+)x(?P<b>[0-9]+)")
    options_spec = {"nflip": (1, 0)}
    search_params = {"nflip": 0}
    faiss_type = faiss.IndexBinaryMultiHash

    def __init__(
        self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None, **kw: Any
    ) -> None:
        bits = self._valid_bits(bits)
        p = dict(params or {})
        nhash, b = int(p.get("nhash", 0)), int(p.get("b", 0) or 0)  # b = 0: derive from bits (mihN)
        if nhash < 1:
            raise ConfigError(f"multihash index: nhash must be >= 1, got {nhash}")
        if b == 0:
            if bits % nhash:
                raise ConfigError(
                    f"mih{nhash}: {bits} bits do not split into {nhash} equal substrings; use multihash{nhash}xB"
                )
            b = bits // nhash
        if not 1 <= b <= 64:
            raise ConfigError(f"multihash index: substring length b must be in 1..64, got {b}")
        if nhash * b > bits:
            raise ConfigError(f"multihash{nhash}x{b}: {nhash} x {b} bits exceed the {bits}-bit code")
        super().__init__(bits, {"nhash": nhash, "b": b}, options, **kw)

    @property
    def nhash(self) -> int:
        return int(self.params["nhash"])

    @property
    def b(self) -> int:
        return int(self.params["b"])

    def _build(self) -> None:
        self._faiss = faiss.IndexBinaryMultiHash(self.bits, self.nhash, self.b)

    def _name(self) -> str:
        return f"multihash{self.nhash}x{self.b}"

    def _own_nflip(self) -> int:
        return min(self._options["nflip"], self.b)

    def _apply_options(self) -> None:
        self._faiss.nflip = self._own_nflip()

    def search(self, queries: Any, k: int, **params: int) -> tuple[np.ndarray, np.ndarray]:
        nflip = self.check_params(params).get("nflip")
        if nflip is None or min(nflip, self.b) == self._own_nflip():
            return super().search(queries, k)
        with self._lock.write():  # faiss reads nflip from the shared object only
            self._faiss.nflip = min(nflip, self.b)
            try:
                return super().search(queries, k)
            finally:
                self._apply_options()

    def _range(self, q: np.ndarray, radius: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if radius // self.nhash <= self._own_nflip():
            return super()._range(q, radius, opts)  # pigeonhole: the tables find every hit
        storage = faiss.downcast_IndexBinary(self._faiss.storage)  # rows in slot order
        lims, dist, labels = storage.range_search(q, radius + 1)
        return lims.astype(np.int64), dist.astype(np.int32), labels.astype(np.int64)

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        info = inspect_binary(buf)
        if info.fourcc != "IBHm":
            raise InputError(f"payload is a {info.fourcc} index, a multihash index holds IBHm")
        return info

    @classmethod
    def _header_params(cls, params: dict[str, Any], info: PayloadInfo) -> dict[str, Any]:
        out = super()._header_params(params, info)
        if (out.get("nhash"), out.get("b")) != (info.fields["nhash"], info.fields["b"]):
            raise InputError(
                f"payload is multihash{info.fields['nhash']}x{info.fields['b']}, the header says "
                f"nhash={out.get('nhash')}, b={out.get('b')}"
            )
        return out
