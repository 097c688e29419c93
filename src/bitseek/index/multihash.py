"""Multi-index hashing (Norouzi et al., CVPR 2012) via faiss ``IndexBinaryMultiHash``.

The code is cut into ``nhash`` disjoint substrings of ``b`` bits, each the key of a hash table; a
query visits, in every table, the buckets within ``nflip`` bit flips of its own substring and verifies
the candidates with exact Hamming distances. By the pigeonhole principle an item within distance r of
the query matches it on at least one substring within ``r // nhash`` flips, so ``range_search`` raises
``nflip`` to ``r // nhash`` for that call and is then **exact**. k-NN search stays approximate
(only candidates within ``nflip`` flips are ranked; rows may come back padded).
"""

from __future__ import annotations

from typing import Mapping

import faiss
import numpy as np

from bitseek.errors import ConfigError
from bitseek.index.tombstones import TombstoneIndex

__all__ = ["MultiHashIndex"]


class MultiHashIndex(TombstoneIndex):
    """``mih{nhash}`` (b = bits / nhash) or ``multihash{nhash}x{b}``, option ``nflip`` (default 1)."""

    backend = "multihash"
    sort_ties = True
    exact = False  # k-NN; range search is exact
    name_patterns = (r"mih(?P<nhash>[0-9]+)", r"multihash(?P<nhash>[0-9]+)x(?P<b>[0-9]+)")
    options_spec = {"nflip": (1, 0)}
    faiss_type = faiss.IndexBinaryMultiHash

    def __init__(
        self, bits: int, params: Mapping[str, int] | None = None, options: Mapping[str, int] | None = None
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
        super().__init__(bits, {"nhash": nhash, "b": b}, options)

    @property
    def nhash(self) -> int:
        return self.params["nhash"]

    @property
    def b(self) -> int:
        return self.params["b"]

    def _build(self) -> None:
        self._faiss = faiss.IndexBinaryMultiHash(self.bits, self.nhash, self.b)

    def _name(self) -> str:
        return f"multihash{self.nhash}x{self.b}"

    def _apply_options(self) -> None:
        self._faiss.nflip = min(self._options["nflip"], self.b)

    def _range(self, q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._faiss.nflip = min(max(self._options["nflip"], radius // self.nhash), self.b)
        try:
            return super()._range(q, radius)
        finally:
            self._apply_options()

    def _after_restore(self) -> None:
        if (int(self._faiss.nhash), int(self._faiss.b)) != (self.nhash, self.b):
            raise ConfigError(
                f"payload is multihash{self._faiss.nhash}x{self._faiss.b}, the header says {self._name()}"
            )
