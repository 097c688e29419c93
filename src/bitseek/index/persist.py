"""The one-file index format: magic, version, JSON header, raw sections, SHA-256 trailer.

Layout (little-endian)::

    offset 0   16 bytes  magic  b"BITSEEK-INDEX\\0\\0\\0"
    offset 16  uint32    format version (1)
    offset 20  uint64    header length H
    offset 28  H bytes   header, UTF-8 JSON (backend, spec, dim, options, counts, section sizes)
    ...        sections  back to back, sizes listed in header["sections"] as [name, nbytes]
    last 32    bytes     SHA-256 of every byte before it

The digest covers the header too, so a flipped byte anywhere (or a truncated tail) is caught before
faiss ever parses the payload. The version sits before the checksum so that a file from another
bitseek release says "unsupported version" rather than "corrupt". Writes go through
``bitseek.atomic.atomic_open``: a crash mid-save leaves the previous file untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bitseek.atomic import atomic_open
from bitseek.index.api import IndexFileError

__all__ = ["MAGIC", "FORMAT_VERSION", "write_index_file", "read_index_file", "open_index_file"]

MAGIC = b"BITSEEK-INDEX\x00\x00\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<16sIQ")
_DIGEST = hashlib.sha256().digest_size


def _as_bytes_view(blob: Any) -> memoryview:
    """A flat byte view of a numpy array or bytes object, without copying."""
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return memoryview(blob).cast("B")
    a = np.ascontiguousarray(blob)
    return memoryview(a.reshape(-1).view(np.uint8))


def write_index_file(
    path: str | os.PathLike[str], header: dict[str, Any], sections: Sequence[tuple[str, Any]]
) -> None:
    """Write ``header`` and named binary ``sections`` atomically with a checksum trailer."""
    views = [(name, _as_bytes_view(blob)) for name, blob in sections]
    full = {**header, "sections": [[name, v.nbytes] for name, v in views]}
    hb = json.dumps(full, sort_keys=True).encode("utf-8")
    digest = hashlib.sha256()
    with atomic_open(path, "wb") as fh:
        for chunk in (_PREFIX.pack(MAGIC, FORMAT_VERSION, len(hb)), hb, *(v for _, v in views)):
            digest.update(chunk)
            fh.write(chunk)
        fh.write(digest.digest())


def read_index_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify an index file; returns the header and read-only uint8 views of the sections."""
    p = Path(path)
    if not p.is_file():
        raise IndexFileError(f"{p}: no such index file")
    raw = p.read_bytes()
    if len(raw) < _PREFIX.size:
        raise IndexFileError(f"{p}: truncated index file ({len(raw)} bytes, shorter than the fixed prefix)")
    magic, version, hlen = _PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise IndexFileError(f"{p}: not a bitseek index file (bad magic {magic[:16]!r})")
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{p}: unsupported index format version {version} (this bitseek reads version {FORMAT_VERSION})"
        )
    if len(raw) < _PREFIX.size + hlen + _DIGEST:
        raise IndexFileError(f"{p}: truncated index file ({len(raw)} bytes, header says {hlen}-byte header)")
    body, stored = memoryview(raw)[:-_DIGEST], raw[-_DIGEST:]
    if hashlib.sha256(body).digest() != stored:
        raise IndexFileError(f"{p}: checksum mismatch, the index file is corrupt or truncated")
    try:
        header = json.loads(raw[_PREFIX.size : _PREFIX.size + hlen].decode("utf-8"))
        layout = [(str(name), int(size)) for name, size in header["sections"]]
    except (ValueError, KeyError, TypeError) as e:
        raise IndexFileError(f"{p}: corrupt index header ({e})") from None
    off = _PREFIX.size + hlen
    if off + sum(size for _, size in layout) != len(body):
        raise IndexFileError(f"{p}: section sizes in the header do not add up to the file size")
    sections: dict[str, np.ndarray] = {}
    for name, size in layout:
        sections[name] = np.frombuffer(raw, dtype=np.uint8, count=size, offset=off)
        off += size
    return header, sections


def open_index_file(
    path: str | os.PathLike[str], verify: bool = True
) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Header and section layout ``name -> (offset, nbytes)`` without reading the file into memory.

    For memory-mapped opening: only the prefix and the JSON header are read; the sizes are checked
    against the file's length. ``verify`` streams the whole file through SHA-256 in small buffers
    (the page cache holds it, this process does not; the cost is one sequential read);
    ``verify=False`` skips that read and trusts the bytes.
    """
    p = Path(path)
    if not p.is_file():
        raise IndexFileError(f"{p}: no such index file")
    size = p.stat().st_size
    with p.open("rb") as fh:
        prefix = fh.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise IndexFileError(f"{p}: truncated index file ({size} bytes, shorter than the fixed prefix)")
        magic, version, hlen = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise IndexFileError(f"{p}: not a bitseek index file (bad magic {magic[:16]!r})")
        if version != FORMAT_VERSION:
            raise IndexFileError(
                f"{p}: unsupported index format version {version} (this bitseek reads version {FORMAT_VERSION})"
            )
        if size < _PREFIX.size + hlen + _DIGEST:
            raise IndexFileError(f"{p}: truncated index file ({size} bytes, header says {hlen}-byte header)")
        raw_header = fh.read(hlen)
        if verify:
            fh.seek(0)
            digest, left = hashlib.sha256(), size - _DIGEST
            while left:
                chunk = fh.read(min(left, 1 << 23))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            if fh.read(_DIGEST) != digest.digest():
                raise IndexFileError(f"{p}: checksum mismatch, the index file is corrupt or truncated")
    try:
        header = json.loads(raw_header.decode("utf-8"))
        layout = [(str(name), int(nbytes)) for name, nbytes in header["sections"]]
    except (ValueError, KeyError, TypeError) as e:
        raise IndexFileError(f"{p}: corrupt index header ({e})") from None
    off = _PREFIX.size + hlen
    if off + sum(n for _, n in layout) != size - _DIGEST:
        raise IndexFileError(f"{p}: section sizes in the header do not add up to the file size")
    out: dict[str, tuple[int, int]] = {}
    for name, nbytes in layout:
        out[name] = (off, nbytes)
        off += nbytes
    return header, out
