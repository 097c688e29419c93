"""The CodeSet file: packed codes, stable non-negative int64 ids, metadata, and exact ternary zeros.

A code set is what an encoder writes and what the index and ``bitseek eval-codes`` read. Its ids
obey the index's rule (non-negative, unique) so every valid code set can be indexed. Ternary
codes keep their zeros in a packed mask beside the bits: :meth:`CodeSet.signed` gives back the
exact ``{-1, 0, +1}`` codes the evaluator ranked, while ``codes`` (0 as bit 0) feeds binary
indexes, which search in plain Hamming space.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitseek._array import as_ids
from bitseek.atomic import atomic_open
from bitseek.codes.bits import check_packed, pack, to_signed, unpack, zero_mask
from bitseek.errors import FileFormatError, InputError

__all__ = ["CodeSet"]

_MAGIC = b"BITSEEK-CODESET\x00"
_VERSION = 1  # binary codes
_VERSION_TERNARY = 2  # binary codes + a packed zero mask


@dataclass
class CodeSet:
    """Packed codes with stable 64-bit ids and optional per-item metadata.

    ``meta`` maps a column name (``"path"``, ``"label"``, ``"frames"`` …) to a list with one
    JSON-serialisable value per item; ``attrs`` holds set-wide facts (model name, bits, dataset).
    ``zeros`` is None for binary codes, else a packed mask (same shape as ``codes``) of exact zeros.
    """

    codes: np.ndarray
    ids: np.ndarray
    bits: int
    meta: dict[str, list[Any]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    zeros: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.codes = check_packed(self.codes, "CodeSet.codes")
        self.ids = np.ascontiguousarray(as_ids(self.ids, name="CodeSet.ids", unique=True))
        if self.ids.shape != (self.codes.shape[0],):
            raise InputError(
                f"CodeSet: {self.codes.shape[0]} code rows but ids of shape {self.ids.shape}"
            )
        if self.bits != self.codes.shape[1] * 8:
            raise InputError(f"CodeSet: bits={self.bits} but rows hold {self.codes.shape[1] * 8}")
        if self.zeros is not None:
            self.zeros = check_packed(self.zeros, "CodeSet.zeros")
            if self.zeros.shape != self.codes.shape:
                raise InputError(f"CodeSet: zero mask of shape {self.zeros.shape} for codes {self.codes.shape}")
            if not self.zeros.any():
                self.zeros = None
            elif (self.codes & self.zeros).any():
                raise InputError("CodeSet: a code marked as 0 has bit 1; zeros must pack as bit 0")
        for k, v in self.meta.items():
            if len(v) != len(self.ids):
                raise InputError(f"CodeSet: meta column {k!r} has {len(v)} values for {len(self.ids)} items")

    @classmethod
    def from_signed(cls, codes: Any, ids: Any | None = None, **kw: Any) -> "CodeSet":
        """Build from ±1/0 codes (any form :func:`~bitseek.codes.to_signed` accepts); zeros are kept.

        ``ids`` default to positions 0..n-1; pass the items' own ids when they have them.
        """
        signed = to_signed(codes, "CodeSet.from_signed")
        if signed.ndim != 2:
            raise InputError(f"CodeSet.from_signed: codes must be 2-D (n, bits), got shape {signed.shape}")
        packed = pack(signed)
        n = packed.shape[0]
        return cls(packed, np.arange(n, dtype=np.int64) if ids is None else ids, packed.shape[1] * 8,
                   zeros=zero_mask(signed), **kw)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def ternary(self) -> bool:
        """True when some code is an exact 0 (Hamming search then sees it as -1)."""
        return self.zeros is not None

    def signed(self) -> np.ndarray:
        """float32 (n, bits) codes in {-1, 0, +1}: exactly what was stored, zeros included."""
        return unpack(self.codes, self.bits, zeros=self.zeros)

    def for_eval(self) -> np.ndarray:
        """The form the evaluator ranks exactly: packed rows, or signed ones when zeros exist."""
        return self.signed() if self.ternary else self.codes

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: header JSON (with a SHA-256 of the payload) then codes, [zeros,] ids."""
        payload = self.codes.tobytes()
        if self.zeros is not None:
            payload += self.zeros.tobytes()
        payload += self.ids.astype("<i8").tobytes()
        header = {
            "version": _VERSION if self.zeros is None else _VERSION_TERNARY,
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
        if p.is_dir():
            raise FileFormatError(f"{p}: is a folder, not a code set file")
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
        if not isinstance(header, dict):
            raise FileFormatError(f"{p}: corrupt header (not a JSON object)")
        off += hl
        version = header.get("version")
        if version not in (_VERSION, _VERSION_TERNARY):
            raise FileFormatError(f"{p}: unsupported code set version {version!r}")
        try:
            n, bits = int(header["n"]), int(header["bits"])
            digest = str(header["sha256"])
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{p}: corrupt header (field {e})") from None
        if n < 0 or bits <= 0 or bits % 8:
            raise FileFormatError(f"{p}: corrupt header (n={n}, bits={bits})")
        nbytes = bits // 8
        planes = 2 if version == _VERSION_TERNARY else 1
        payload = raw[off:]
        expected = planes * n * nbytes + n * 8
        if len(payload) != expected:
            raise FileFormatError(f"{p}: payload is {len(payload)} bytes, expected {expected} (truncated?)")
        if hashlib.sha256(payload).hexdigest() != digest:
            raise FileFormatError(f"{p}: checksum mismatch, the file is corrupt")
        codes = np.frombuffer(payload, dtype=np.uint8, count=n * nbytes).reshape(n, nbytes).copy()
        zeros = None
        if planes == 2:
            zeros = np.frombuffer(payload, dtype=np.uint8, offset=n * nbytes, count=n * nbytes).reshape(n, nbytes).copy()
        ids = np.frombuffer(payload, dtype="<i8", offset=planes * n * nbytes, count=n).astype(np.int64)
        try:
            return cls(codes, ids, bits, meta=header.get("meta", {}), attrs=header.get("attrs", {}), zeros=zeros)
        except InputError as e:
            raise FileFormatError(f"{p}: {e}") from None
