"""Bits of binary codes: sign rules, packing, popcount and Hamming distances (the one copy).

Conventions shared by every layer:

* A *packed* code set is a ``uint8`` array of shape ``(n, bits // 8)`` in ``numpy.packbits`` order
  (most significant bit first), so faiss binary indexes take it as it is.
* A *signed* code set is a float32 array of ±1 (and, for reference compatibility, possibly 0).
* Packing maps a value ``> 0`` to bit 1 and everything else (``-1`` **and exact 0**) to bit 0.
  Exact zeros arise in the reference video-hashing code (sign of a mean over an even number of
  frames); the evaluator ranks them unpacked to reproduce published numbers, packing is lossy for
  them, and :class:`bitseek.codes.CodeSet` stores a zero mask beside the bits so nothing is lost.

Two functions turn things into signed codes, with opposite jobs and explicit names:

* :func:`binarize` takes *real values* (a model's outputs) and returns their sign;
* :func:`to_signed` takes *codes* in any accepted form and refuses real values, so a forgotten
  binarisation is an error instead of silently different numbers.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from bitseek._array import as_numpy
from bitseek.errors import InputError

ZeroRule = Literal["keep", "pos", "neg"]

__all__ = [
    "ZeroRule",
    "binarize",
    "sign",
    "to_signed",
    "as_signed",
    "to_bits",
    "pack",
    "unpack",
    "check_packed",
    "code_bits",
    "zero_mask",
    "popcount",
    "words",
    "hamming",
]


def binarize(values: Any, zero: ZeroRule = "keep") -> np.ndarray:
    """Sign of real values as float32 ±1 (the step from a model's output to a code).

    ``zero`` decides what an exact 0 becomes: ``"keep"`` leaves 0 (``torch.sign``/reference
    behaviour, ternary codes), ``"pos"`` maps it to +1, ``"neg"`` to -1 (SSVH's rule).
    """
    a = as_numpy(values).astype(np.float32, copy=False)
    if np.isnan(a).any():
        raise InputError("binarize(): input contains NaN")
    out = np.sign(a).astype(np.float32)
    if zero == "pos":
        out[out == 0] = 1.0
    elif zero == "neg":
        out[out == 0] = -1.0
    elif zero != "keep":
        raise InputError(f"binarize(): zero must be 'keep', 'pos' or 'neg', got {zero!r}")
    return out


sign = binarize  # the short name, as torch.sign/np.sign


def to_signed(codes: Any, name: str = "codes") -> np.ndarray:
    """Codes in any accepted form as float32 ``{-1, 0, +1}``; real values are refused, not binarised.

    uint8 is packed bits (unpacked to ±1), bool is bits, float and signed integers must already
    be -1/0/+1. Call :func:`binarize` first on a model's real-valued outputs.
    """
    a = as_numpy(codes, name)
    if a.dtype == np.uint8:
        return np.unpackbits(a, axis=-1).astype(np.float32) * 2.0 - 1.0
    if a.dtype == np.bool_:
        return a.astype(np.float32) * 2.0 - 1.0
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.signedinteger)):
        raise InputError(
            f"{name}: codes must be ±1/0 numbers (float or signed int), booleans or packed uint8, "
            f"got dtype {a.dtype}"
        )
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError(f"{name}: codes contain NaN or inf")
    ok = (a == 0) | (a == 1) | (a == -1)
    if not ok.all():
        bad = a[~ok].flat[0]
        raise InputError(
            f"{name}: code values must be -1, 0 or +1, found {bad!r}; binarise real-valued outputs "
            "first (bitseek.codes.binarize)"
        )
    return np.ascontiguousarray(a, dtype=np.float32)


as_signed = to_signed  # the earlier name; it now refuses real values instead of binarising them


def code_bits(a: np.ndarray) -> int:
    """Bits per row of a code matrix: 8 per byte when packed, else one per column."""
    return int(a.shape[1]) * 8 if a.dtype == np.uint8 else int(a.shape[1])


def to_bits(codes: Any) -> np.ndarray:
    """Boolean bit matrix from ±1/0 floats, {0,1} integers or booleans (value > 0 -> True)."""
    a = as_numpy(codes)
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


def zero_mask(codes: Any) -> np.ndarray | None:
    """Packed mask of the exact zeros of signed codes (bit 1 = the code is 0), or None if there are none."""
    a = as_numpy(codes)
    if a.dtype == np.uint8 or a.dtype == np.bool_:
        return None
    z = a == 0
    return np.packbits(z, axis=1) if z.any() else None


def check_packed(packed: Any, name: str = "codes") -> np.ndarray:
    """Validate a packed code matrix and return it as a C-contiguous uint8 array."""
    p = as_numpy(packed)
    if p.dtype != np.uint8:
        raise InputError(f"{name}: packed codes must be uint8, got {p.dtype}")
    if p.ndim != 2:
        raise InputError(f"{name}: packed codes must be 2-D (n, bits/8), got shape {p.shape}")
    return np.ascontiguousarray(p)


def unpack(packed: Any, bits: int | None = None, zeros: Any | None = None) -> np.ndarray:
    """Unpack uint8 rows into float32 ±1 codes of ``bits`` columns; ``zeros`` (a packed mask) restores 0s."""
    p = check_packed(packed)
    nbits = p.shape[1] * 8 if bits is None else int(bits)
    if nbits != p.shape[1] * 8:
        raise InputError(f"packed rows hold {p.shape[1] * 8} bits, asked to unpack {nbits}")
    out = np.unpackbits(p, axis=1).astype(np.float32) * 2.0 - 1.0
    if zeros is not None:
        z = check_packed(zeros, "zeros")
        if z.shape != p.shape:
            raise InputError(f"zeros: mask of shape {z.shape} for codes of shape {p.shape}")
        out[np.unpackbits(z, axis=1).astype(bool)] = 0.0
    return out


# --------------------------------------------------------------------------- popcount / Hamming


def _popcount_lut() -> np.ndarray:
    return np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)


_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_LUT = None if _HAS_BITWISE_COUNT else _popcount_lut()


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned integer array (uint8 counts, same shape)."""
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(x)
    if x.dtype == np.uint8:
        return _LUT[x]  # type: ignore[index]
    return _LUT[x.view(np.uint8)].reshape(*x.shape, x.dtype.itemsize).sum(-1, dtype=np.uint8)  # type: ignore[index]


def words(packed: np.ndarray) -> np.ndarray:
    """uint8 rows -> uint64 words (zero-padded to 8-byte multiples): 8x fewer popcounts per row."""
    n, nbytes = packed.shape
    pad = (-nbytes) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((n, pad), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming(query: Any, db: Any, chunk: int = 1024) -> np.ndarray:
    """Hamming distances (nq, ndb) int32 between packed code sets, in query chunks (memory O(chunk·ndb))."""
    q = check_packed(query, "query")
    d = check_packed(db, "db")
    if q.shape[1] != d.shape[1]:
        raise InputError(
            f"query codes have {q.shape[1] * 8} bits but database codes have {d.shape[1] * 8}"
        )
    qw, dw = words(q), words(d)
    out = np.empty((q.shape[0], d.shape[0]), dtype=np.int32)
    for s in range(0, q.shape[0], chunk):
        x = np.bitwise_xor(qw[s : s + chunk, None, :], dw[None, :, :])
        out[s : s + chunk] = popcount(x).sum(axis=2, dtype=np.int32)
    return out
