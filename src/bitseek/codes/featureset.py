"""The FeatureSet file: float descriptors (float16 or float32 rows) with int64 ids and JSON metadata.

The float twin of :class:`~bitseek.codes.CodeSet`, made for databases too large to read whole
(Revisited Oxford + 1M distractors at 2,048-d is 8 GB of float32). Layout, little-endian::

    magic (16 B) | header length (u64) | JSON header, padded | rows (n x dim, 64-B aligned) | ids (n x int64)

The header holds ``n``, ``dim``, ``dtype``, the byte offsets, ``meta``/``attrs`` and two SHA-256
digests: one of the ids, one of the rows. Verification rule:

* :meth:`FeatureSet.open` checks the header, the file size against it, and the ids (read, hashed
  and validated: they are 8 bytes per item). The rows are memory-mapped and **not read**, so
  opening a 1M x 2048 database costs milliseconds and no memory.
* :meth:`FeatureSet.verify` streams the rows once through SHA-256 (memory stays at one chunk)
  and raises FileFormatError on a mismatch. :meth:`FeatureSet.load` is ``open`` + ``verify``.

So a truncated file, a damaged header or damaged ids are refused on open; a flipped byte inside
the rows is caught by ``verify()`` (``bitseek eval`` on feature files calls it before scoring).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bitseek._array import as_ids, as_numpy
from bitseek.atomic import atomic_open
from bitseek.errors import FileFormatError, InputError

__all__ = ["FeatureSet", "FEATURE_DTYPES"]

_MAGIC = b"BITSEEK-FEATSET\x00"
_VERSION = 1
_ALIGN = 64
_CHUNK_BYTES = 16 << 20
FEATURE_DTYPES = ("float32", "float16")


def _as_rows(features: Any, dtype: str | None, name: str) -> np.ndarray:
    a = as_numpy(features, name)
    if a.ndim != 2:
        raise InputError(f"{name}: features must be a 2-D (n, dim) array, got shape {a.shape}")
    if a.shape[1] == 0:
        raise InputError(f"{name}: features have 0 columns")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name}: features must be real numbers, got dtype {a.dtype}")
    want = np.dtype(dtype) if dtype is not None else (a.dtype if a.dtype.name in FEATURE_DTYPES else np.dtype(np.float32))
    if want.name not in FEATURE_DTYPES:
        raise InputError(f"{name}: dtype must be float32 or float16, got {want}")
    with np.errstate(over="ignore"):  # overflow to inf is reported below, by name
        out = a if a.dtype == want else a.astype(want)
    if not np.isfinite(out).all():
        hint = " (values beyond float16's range?)" if want == np.float16 and np.isfinite(a).all() else ""
        raise InputError(f"{name}: features contain NaN or inf{hint}")
    return out


class FeatureSet:
    """Float rows ``features`` (n, dim) float16/float32, ids (n,) int64 >= 0, per-item ``meta`` columns.

    ``features`` may be an ``np.memmap`` (from :meth:`open`): index it or pass it on, and only the
    rows touched are read. :meth:`float32` gives a float32 copy of a slice.
    """

    def __init__(self, features: Any, ids: Any | None = None, meta: dict[str, list[Any]] | None = None,
                 attrs: dict[str, Any] | None = None, *, dtype: str | None = None) -> None:
        if isinstance(features, np.memmap) and dtype is None:
            self.features: np.ndarray = features
        else:
            self.features = _as_rows(features, dtype, "FeatureSet.features")
        n = int(self.features.shape[0])
        self.ids = as_ids(np.arange(n, dtype=np.int64) if ids is None else ids, n, "FeatureSet.ids", unique=True)
        self.meta = dict(meta or {})
        self.attrs = dict(attrs or {})
        for k, v in self.meta.items():
            if len(v) != n:
                raise InputError(f"FeatureSet: meta column {k!r} has {len(v)} values for {n} items")
        self.path: Path | None = None
        self._rows_sha256: str | None = None
        self._rows_offset = 0

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"FeatureSet(n={len(self)}, dim={self.dim}, dtype={self.dtype}{where})"

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def dtype(self) -> str:
        return str(self.features.dtype)

    @property
    def memory_mapped(self) -> bool:
        return isinstance(self.features, np.memmap)

    def float32(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """float32 copy of ``rows`` (all by default): what inner-product search consumes."""
        x = self.features if rows is None else self.features[rows]
        return np.asarray(x, dtype=np.float32).copy() if x.dtype == np.float32 else x.astype(np.float32)

    def iter_chunks(self, rows: int = 65536) -> Iterator[tuple[slice, np.ndarray]]:
        """``(slice, float32 rows)`` in order, for streaming a mapped file into an index."""
        for s in range(0, len(self), rows):
            sl = slice(s, min(s + rows, len(self)))
            yield sl, self.float32(sl)

    # ------------------------------------------------------------------ writing

    def save(self, path: str | os.PathLike[str], dtype: str | None = None) -> Path:
        """Write atomically (temporary file + rename), in ``dtype`` (default: the rows' own)."""
        rows = self.features if dtype is None else _as_rows(self.features, dtype, "FeatureSet.save")
        p = Path(path)
        if p.is_dir():
            raise InputError(f"{p}: is a folder; give a file name for the feature set")
        n, dim = rows.shape
        ids = self.ids.astype("<i8")
        header = {
            "version": _VERSION,
            "n": int(n),
            "dim": int(dim),
            "dtype": rows.dtype.name,
            "ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
            "meta": self.meta,
            "attrs": self.attrs,
        }
        row_hash = hashlib.sha256()
        le = rows.dtype.newbyteorder("<")
        step = max(1, _CHUNK_BYTES // max(1, dim * rows.dtype.itemsize))
        # The rows digest goes into the header, which precedes the rows: hash first (chunked, so a
        # memory-mapped source is streamed, never held whole), then write.
        for s in range(0, n, step):
            row_hash.update(np.ascontiguousarray(rows[s : s + step], dtype=le).tobytes())
        header["rows_sha256"] = row_hash.hexdigest()
        hb = json.dumps(header).encode()
        start = len(_MAGIC) + 8 + len(hb)
        pad = (-start) % _ALIGN
        with atomic_open(p, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(struct.pack("<Q", len(hb) + pad))
            fh.write(hb + b" " * pad)  # JSON tolerates trailing blanks; rows start 64-byte aligned
            for s in range(0, n, step):
                fh.write(np.ascontiguousarray(rows[s : s + step], dtype=le).tobytes())
            fh.write(ids.tobytes())
        return p

    # ------------------------------------------------------------------ reading

    @classmethod
    def open(cls, path: str | os.PathLike[str], mmap: bool = True) -> "FeatureSet":
        """Open without reading the rows (memory-mapped); header, size and ids are checked now.

        Row bytes are checked by :meth:`verify` (see the module docstring for the rule).
        ``mmap=False`` reads the rows into memory instead (still unverified until ``verify()``).
        """
        p = Path(path)
        if not p.exists():
            raise FileFormatError(f"{p}: no such feature set file")
        if p.is_dir():
            raise FileFormatError(f"{p}: is a folder, not a feature set file")
        size = p.stat().st_size
        with p.open("rb") as fh:
            magic = fh.read(len(_MAGIC))
            if magic != _MAGIC:
                hint = " (this is a CodeSet: binary codes)" if magic == b"BITSEEK-CODESET\x00" else ""
                raise FileFormatError(f"{p}: not a bitseek feature set (bad magic){hint}")
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise FileFormatError(f"{p}: truncated header")
            (hl,) = struct.unpack("<Q", raw_len)
            if hl > size:
                raise FileFormatError(f"{p}: truncated header ({hl} header bytes in a {size}-byte file)")
            hb = fh.read(hl)
            try:
                header = json.loads(hb)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise FileFormatError(f"{p}: corrupt header ({e})") from None
            if not isinstance(header, dict):
                raise FileFormatError(f"{p}: corrupt header (not a JSON object)")
            if header.get("version") != _VERSION:
                raise FileFormatError(f"{p}: unsupported feature set version {header.get('version')!r}")
            try:
                n, dim, dt = int(header["n"]), int(header["dim"]), str(header["dtype"])
                ids_digest, rows_digest = str(header["ids_sha256"]), str(header["rows_sha256"])
            except (KeyError, TypeError, ValueError) as e:
                raise FileFormatError(f"{p}: corrupt header (field {e})") from None
            if n < 0 or dim <= 0 or dt not in FEATURE_DTYPES:
                raise FileFormatError(f"{p}: corrupt header (n={n}, dim={dim}, dtype={dt!r})")
            offset = len(_MAGIC) + 8 + hl
            dtype = np.dtype(dt).newbyteorder("<")
            rows_bytes = n * dim * dtype.itemsize
            expected = offset + rows_bytes + 8 * n
            if size != expected:
                raise FileFormatError(
                    f"{p}: file is {size} bytes, the header describes {expected} "
                    f"({n} x {dim} {dt} rows + ids){' (truncated?)' if size < expected else ''}"
                )
            fh.seek(offset + rows_bytes)
            id_bytes = fh.read(8 * n)
            if hashlib.sha256(id_bytes).hexdigest() != ids_digest:
                raise FileFormatError(f"{p}: ids checksum mismatch, the file is corrupt")
            ids = np.frombuffer(id_bytes, dtype="<i8").astype(np.int64)
            if mmap and n > 0:
                rows: np.ndarray = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=(n, dim))
            else:
                fh.seek(offset)
                rows = np.frombuffer(fh.read(rows_bytes), dtype=dtype).reshape(n, dim).astype(dtype.newbyteorder("="))
        try:
            fs = cls.__new__(cls)
            fs.features = rows
            fs.ids = as_ids(ids, n, f"{p}: ids", unique=True)
            fs.meta = dict(header.get("meta") or {})
            fs.attrs = dict(header.get("attrs") or {})
            for k, v in fs.meta.items():
                if not isinstance(v, list) or len(v) != n:
                    raise InputError(f"meta column {k!r} does not hold one value per item")
        except InputError as e:
            raise FileFormatError(f"{p}: {e}") from None
        fs.path = p
        fs._rows_sha256 = rows_digest
        fs._rows_offset = offset
        return fs

    @classmethod
    def load(cls, path: str | os.PathLike[str], mmap: bool = True) -> "FeatureSet":
        """:meth:`open` then :meth:`verify`: every byte checked before the rows are used."""
        fs = cls.open(path, mmap=mmap)
        fs.verify()
        return fs

    def verify(self) -> "FeatureSet":
        """Stream the stored rows through SHA-256; FileFormatError if they differ from the header's digest.

        Reads the file itself (not the mapped array), one chunk at a time, so memory stays flat.
        A FeatureSet built in memory has nothing to verify and returns at once.
        """
        if self.path is None or self._rows_sha256 is None:
            return self
        h = hashlib.sha256()
        remaining = len(self) * self.dim * self.features.dtype.itemsize
        with self.path.open("rb") as fh:
            fh.seek(self._rows_offset)
            while remaining > 0:
                buf = fh.read(min(_CHUNK_BYTES, remaining))
                if not buf:
                    raise FileFormatError(f"{self.path}: truncated rows")
                h.update(buf)
                remaining -= len(buf)
        if h.hexdigest() != self._rows_sha256:
            raise FileFormatError(f"{self.path}: rows checksum mismatch, the feature file is corrupt")
        return self
