"""Binary codes: conversions, packing, Hamming distances and the CodeSet file.

Conventions shared by every layer:

* A *packed* code set is a ``uint8`` array of shape ``(n, bits // 8)`` in ``numpy.packbits`` order
  (most significant bit first), so faiss binary indexes take it as it is.
* A *signed* code set is a float array of ±1 (and, for reference compatibility, possibly 0) values.
* Packing maps a value ``> 0`` to bit 1 and everything else (``-1`` **and exact 0**) to bit 0.
  Exact zeros arise in the reference video-hashing code (sign of a mean over an even number of
  frames); the evaluator accepts them unpacked to reproduce published numbers, and packing maps them
  to 0 (the same bit as -1), which is the documented, lossy direction.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bitseek.atomic import atomic_open
from bitseek.errors import FileFormatError, InputError

ZeroRule = Literal["keep", "pos", "neg"]

__all__ = [
    "sign",
    "to_bits",
    "pack",
    "unpack",
    "as_signed",
    "hamming",
    "check_packed",
    "CodeSet",
]


def _to_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays, torch tensors (any device) and sequences."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def sign(x: Any, zero: ZeroRule = "keep") -> np.ndarray:
    """Sign of real values as float32 ±1.

    ``zero`` decides what an exact 0 becomes: ``"keep"`` leaves 0 (``torch.sign``/reference
    behaviour, ternary codes), ``"pos"`` maps it to +1, ``"neg"`` to -1 (SSVH's rule).
    """
    a = _to_numpy(x).astype(np.float32, copy=False)
    if np.isnan(a).any():
        raise InputError("sign(): input contains NaN")
    out = np.sign(a).astype(np.float32)
    if zero == "pos":
        out[out == 0] = 1.0
    elif zero == "neg":
        out[out == 0] = -1.0
    elif zero != "keep":
        raise InputError(f"sign(): zero must be 'keep', 'pos' or 'neg', got {zero!r}")
    return out


def to_bits(codes: Any) -> np.ndarray:
    """Boolean bit matrix from ±1/0 floats, {0,1} integers or booleans (value > 0 -> True)."""
    a = _to_numpy(codes)
    if a.ndim != 2:
        raise InputError(f"codes must be 2-D (n, bits), got shape {a.shape}")
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise InputError("codes contain NaN")
    return a > 0


def pack(codes: Any) -> np.ndarray:
    """Pack (n, bits) codes into (n, bits/8) uint8 rows, numpy.packbits (MSB-first) order."""
    bits = to_bits(codes)
    if bits.shape[1] % 8 != 0 or bits.shape[1] == 0:
        raise InputError(f"number of bits must be a positive multiple of 8, got {bits.shape[1]}")
    return np.packbits(bits, axis=1)


def unpack(packed: Any, bits: int | None = None) -> np.ndarray:
    """Unpack uint8 rows into float32 ±1 codes of ``bits`` columns (default: all 8·bytes)."""
    p = check_packed(packed)
    nbits = p.shape[1] * 8 if bits is None else int(bits)
    if nbits != p.shape[1] * 8:
        raise InputError(f"packed rows hold {p.shape[1] * 8} bits, asked to unpack {nbits}")
    return np.unpackbits(p, axis=1).astype(np.float32) * 2.0 - 1.0


def check_packed(packed: Any, name: str = "codes") -> np.ndarray:
    """Validate a packed code matrix and return it as a C-contiguous uint8 array."""
    p = _to_numpy(packed)
    if p.dtype != np.uint8:
        raise InputError(f"{name}: packed codes must be uint8, got {p.dtype}")
    if p.ndim != 2:
        raise InputError(f"{name}: packed codes must be 2-D (n, bits/8), got shape {p.shape}")
    return np.ascontiguousarray(p)


def as_signed(codes: Any, name: str = "codes") -> np.ndarray:
    """Any accepted code form as float32 (n, bits) with values in {-1, 0, +1}.

    uint8 input is taken as packed; bool as bits; other numeric input is taken as signed codes
    (its sign is used, so real-valued embeddings are binarised with zeros kept).
    """
    a = _to_numpy(codes)
    if a.ndim != 2:
        raise InputError(f"{name}: codes must be 2-D, got shape {a.shape}")
    if a.dtype == np.uint8:
        return unpack(a)
    if a.dtype == np.bool_:
        return a.astype(np.float32) * 2.0 - 1.0
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{name}: codes must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InputError(f"{name}: codes contain NaN or inf")
    return np.sign(a).astype(np.float32)


def _popcount_lut() -> np.ndarray:
    return np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)


_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_LUT = None if _HAS_BITWISE_COUNT else _popcount_lut()


def _popcount(x: np.ndarray) -> np.ndarray:
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(x)
    return _LUT[x]  # type: ignore[index]


def hamming(query: Any, db: Any, chunk: int = 1024) -> np.ndarray:
    """Hamming distances (nq, ndb) int32 between packed code sets.

    Works on 64-bit words when the row length allows it (8x fewer popcounts) and in query chunks
    so memory stays at O(chunk · ndb).
    """
    q = check_packed(query, "query")
    d = check_packed(db, "db")
    if q.shape[1] != d.shape[1]:
        raise InputError(
            f"query codes have {q.shape[1] * 8} bits but database codes have {d.shape[1] * 8}"
        )
    nbytes = q.shape[1]
    if nbytes % 8 == 0:
        qw, dw = q.view(np.uint64), d.view(np.uint64)
    else:
        qw, dw = q, d
    out = np.empty((q.shape[0], d.shape[0]), dtype=np.int32)
    for s in range(0, q.shape[0], chunk):
        x = np.bitwise_xor(qw[s : s + chunk, None, :], dw[None, :, :])
        out[s : s + chunk] = _popcount(x).sum(axis=2, dtype=np.int32)
    return out


# --------------------------------------------------------------------------- CodeSet file

_MAGIC = b"BITSEEK-CODESET\x00"
_VERSION = 1


@dataclass
class CodeSet:
    """Packed codes with stable 64-bit ids and optional per-item metadata.

    ``meta`` maps a column name (``"path"``, ``"label"``, ``"frames"`` …) to a list with one
    JSON-serialisable value per item; ``attrs`` holds set-wide facts (model name, bits, dataset).
    """

    codes: np.ndarray
    ids: np.ndarray
    bits: int
    meta: dict[str, list[Any]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = check_packed(self.codes, "CodeSet.codes")
        self.ids = np.ascontiguousarray(_to_numpy(self.ids))
        if self.ids.dtype.kind not in "iu":
            raise InputError(f"CodeSet.ids must be integers, got {self.ids.dtype}")
        self.ids = self.ids.astype(np.int64)
        if self.ids.shape != (self.codes.shape[0],):
            raise InputError(
                f"CodeSet: {self.codes.shape[0]} code rows but ids of shape {self.ids.shape}"
            )
        if self.bits != self.codes.shape[1] * 8:
            raise InputError(f"CodeSet: bits={self.bits} but rows hold {self.codes.shape[1] * 8}")
        if len(np.unique(self.ids)) != len(self.ids):
            raise InputError("CodeSet: ids must be unique")
        for k, v in self.meta.items():
            if len(v) != len(self.ids):
                raise InputError(f"CodeSet: meta column {k!r} has {len(v)} values for {len(self.ids)} items")

    @classmethod
    def from_signed(cls, codes: Any, ids: Any | None = None, **kw: Any) -> "CodeSet":
        """Build from ±1/0 float codes (0 packs as bit 0, see module docstring)."""
        packed = pack(codes)
        n = packed.shape[0]
        return cls(packed, np.arange(n, dtype=np.int64) if ids is None else ids, packed.shape[1] * 8, **kw)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def signed(self) -> np.ndarray:
        return unpack(self.codes, self.bits)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: header JSON (with a SHA-256 of the payload) then codes and ids."""
        payload = self.codes.tobytes() + self.ids.astype("<i8").tobytes()
        header = {
            "version": _VERSION,
            "bits": int(self.bits),
            "n": len(self),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "meta": self.meta,
            "attrs": self.attrs,
        }
        hb = json.dumps(header).encode()
        with atomic_open(path, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(struct.pack("<Q", len(hb)))
            fh.write(hb)
            fh.write(payload)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CodeSet":
        """Read and verify a CodeSet file; any damage raises FileFormatError naming the file."""
        p = Path(path)
        if not p.exists():
            raise FileFormatError(f"{p}: no such code set file")
        raw = p.read_bytes()
        if not raw.startswith(_MAGIC):
            raise FileFormatError(f"{p}: not a bitseek code set (bad magic)")
        off = len(_MAGIC)
        if len(raw) < off + 8:
            raise FileFormatError(f"{p}: truncated header")
        (hl,) = struct.unpack("<Q", raw[off : off + 8])
        off += 8
        try:
            header = json.loads(raw[off : off + hl])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FileFormatError(f"{p}: corrupt header ({e})") from None
        off += hl
        if header.get("version") != _VERSION:
            raise FileFormatError(f"{p}: unsupported code set version {header.get('version')!r}")
        n, bits = int(header["n"]), int(header["bits"])
        nbytes = bits // 8
        payload = raw[off:]
        if len(payload) != n * nbytes + n * 8:
            raise FileFormatError(
                f"{p}: payload is {len(payload)} bytes, expected {n * nbytes + n * 8} (truncated?)"
            )
        if hashlib.sha256(payload).hexdigest() != header["sha256"]:
            raise FileFormatError(f"{p}: checksum mismatch, the file is corrupt")
        codes = np.frombuffer(payload, dtype=np.uint8, count=n * nbytes).reshape(n, nbytes).copy()
        ids = np.frombuffer(payload, dtype="<i8", offset=n * nbytes, count=n).astype(np.int64)
        return cls(codes, ids, bits, meta=header.get("meta", {}), attrs=header.get("attrs", {}))
