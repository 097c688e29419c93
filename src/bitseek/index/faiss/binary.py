"""Shared behaviour of the faiss binary (Hamming) engines, and the exact ``flat`` engine.

Input codes are packed uint8 rows (``numpy.packbits`` order, what ``bitseek.codes.pack`` makes and
faiss expects as is) or unpacked ±1 / {0,1} / bool codes, which are packed here (value > 0 -> bit 1,
so an exact 0 becomes bit 0, like ``bitseek.codes.pack``). A uint8 array is always taken as packed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from bitseek.codes import pack
from bitseek.errors import ConfigError, InputError
from bitseek.index.api import to_numpy
from bitseek.index.faiss.base import FaissIndex
from bitseek.index.faiss.validate import PayloadInfo, inspect_binary

__all__ = ["BinaryIndex", "BinaryFlatIndex"]


class BinaryIndex(FaissIndex):
    """A faiss ``IndexBinary*`` over ``bits``-bit codes with int32 Hamming distances."""

    metric = "hamming"
    faiss_type: type = faiss.IndexBinary  # what ``_restore_faiss`` accepts

    def __init__(
        self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None, **kw: Any
    ) -> None:
        super().__init__(self._valid_bits(bits), params, options, **kw)

    @classmethod
    def _valid_bits(cls, bits: Any) -> int:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
            raise ConfigError(f"{cls.engine} index: bits must be a positive multiple of 8, got {bits!r}")
        return int(bits)

    @property
    def bits(self) -> int:
        return self.dim

    def _coerce(self, x: Any, name: str) -> np.ndarray:
        a = to_numpy(x)
        if a.ndim != 2:
            raise InputError(
                f"{name}: expected a 2-D array (n, {self.bits // 8}) of packed uint8 rows or (n, {self.bits}) "
                f"±1 codes, got shape {a.shape} (use x.reshape(1, -1) for a single code)"
            )
        if a.dtype == np.uint8:
            if a.shape[1] != self.bits // 8:
                looks_unpacked = a.shape[1] == self.bits or (a.size > 0 and int(a.max()) <= 1)
                hint = "; unpacked 0/1 codes must be bool or int, not uint8" if looks_unpacked else ""
                raise InputError(
                    f"{name}: packed rows of {a.shape[1]} bytes ({a.shape[1] * 8} bits), the index holds "
                    f"{self.bits}-bit codes ({self.bits // 8} bytes){hint}"
                )
            return np.ascontiguousarray(a)
        if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{name}: codes must be numeric, got dtype {a.dtype}")
        if a.shape[1] != self.bits:
            raise InputError(f"{name}: {a.shape[1]} code columns, the index holds {self.bits}-bit codes")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise InputError(f"{name}: codes contain NaN or inf")
        if np.issubdtype(a.dtype, np.complexfloating):
            raise InputError(f"{name}: complex codes are not supported")
        return pack(a)

    def _check_radius(self, radius: Any) -> int:
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InputError(f"range_search(): radius must be a non-negative integer number of bits, got {radius!r}")
        return min(int(radius), self.bits)

    def _knn(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        return self._faiss.search(q, k)

    def _range(self, q: np.ndarray, radius: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # faiss keeps distances strictly below its radius; ours is inclusive
        lims, dist, labels = self._faiss.range_search(q, radius + 1)
        return lims.astype(np.int64), dist.astype(np.int32), labels.astype(np.int64)

    def _serialize(self) -> np.ndarray:
        return faiss.serialize_index_binary(self._faiss)

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        return inspect_binary(buf)

    def _restore_faiss(self, buf: np.ndarray, info: PayloadInfo) -> None:
        idx = faiss.deserialize_index_binary(np.ascontiguousarray(buf))
        if not isinstance(idx, self.faiss_type):
            raise InputError(f"payload is a {type(idx).__name__}, a {self.engine} index holds {self.faiss_type.__name__}")
        if int(idx.d) != self.bits:
            raise InputError(f"payload holds {idx.d}-bit codes, the header says {self.bits}")
        self._faiss = idx
        self._after_restore()

    def _after_restore(self) -> None:
        """Re-derive Python-side handles after the faiss object was replaced."""


class BinaryFlatIndex(BinaryIndex):
    """Exact exhaustive Hamming scan (faiss ``IndexBinaryFlat``).

    faiss scans rows in position order and only replaces its heap top on a strictly smaller distance,
    then sorts the heap by (distance, label); with labels = insertion slots this is exactly the
    documented tie rule, so no post-processing is needed (checked by property tests).
    """

    engine = "flat"
    exact = True
    name_patterns = (r"flat",)
    faiss_type = faiss.IndexBinaryFlat

    def _build(self) -> None:
        self._faiss = faiss.IndexBinaryFlat(self.bits)

    def _name(self) -> str:
        return "flat"

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        info = inspect_binary(buf)
        if info.fourcc != "IBxF":
            raise InputError(f"payload is a {info.fourcc} index, a flat index holds IBxF")
        return info
