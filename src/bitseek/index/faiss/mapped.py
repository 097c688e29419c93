"""A saved ``flat`` index searched straight from its file (``load_index(path, mmap=True)``).

Why: 100M 64-bit codes are 800 MB of codes plus 800 MB of ids; loading copies both into memory.
Here the file is mapped read-only and scanned in blocks of ``block_rows`` codes by faiss's
``knn_hamming`` (no copy of the codes), each block's top-k merged into the running top-k. After
each block the kernel is told the pages are not needed (``MADV_DONTNEED``): the page cache keeps
them for the next search, but they stop counting in this process's resident memory, which stays at
about one block (64 MB by default) however large the index. Only the ids of returned results are
read from the id table, window by window (a page fault maps neighbouring pages too, so random reads
across the whole table would otherwise make most of it resident). Results equal the in-memory index exactly (same tie rule: equal distances
in insertion order), which ``tests/index/test_mapped.py`` checks.

faiss's own ``IO_FLAG_MMAP`` does not help here: for binary indexes it maps only on-disk inverted
lists, and our files wrap the faiss payload in a checksummed container anyway. IVF files are not
mapped (their lists are small per probe but faiss needs them in its own structures); load them.

The mapped index is read-only: ``add``/``remove``/``train``/``save`` say so.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bitseek.errors import InputError
from bitseek.index.api import PAD_HAMMING, PAD_ID, IndexFileError, RangeResult, check_k
from bitseek.index.faiss.binary import BinaryFlatIndex
from bitseek.index.faiss.validate import PayloadError, inspect_binary
from bitseek.index.meta import MetaStore

__all__ = ["MappedFlatIndex", "open_mapped"]

_FLAT_CODES_AT = 4 + struct.calcsize("<iiqBi") + 8  # fourcc, header, vector length, then the codes
_PAGE = mmap.PAGESIZE


class MappedFlatIndex(BinaryFlatIndex):
    """Exact Hamming scan over codes that stay in the file (see the module docstring)."""

    block_rows = 1 << 23  # 8M codes a block (64 MB at 64 bits)

    def __init__(self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None,
                 **kw: Any) -> None:
        super().__init__(bits, params, options, build=False)

    # the file, set up by open_mapped
    _mm: mmap.mmap
    _codes: np.ndarray
    _slot_ids: np.ndarray
    _codes_at: int
    _ids_at: int
    _n: int
    path: Path

    @property
    def memory_mapped(self) -> bool:
        return True

    def _release(self, start: int, nbytes: int) -> None:
        """Drop a byte range of the mapping from this process's resident set (kept in page cache)."""
        a = start - start % _PAGE
        length = nbytes + (start - a)
        length = min(length, len(self._mm) - a)
        if length > 0 and hasattr(self._mm, "madvise"):
            self._mm.madvise(mmap.MADV_DONTNEED, a, length)

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        """The id table, memory-mapped (read-only)."""
        return self._slot_ids

    def contains(self, ids: Any) -> np.ndarray:
        from bitseek.index.api import as_ids

        want = as_ids(ids)
        found = np.zeros(want.size, bool)
        for s in range(0, self._n, self.block_rows):
            found |= np.isin(want, self._slot_ids[s : s + self.block_rows])
            self._release(self._ids_at + 8 * s, 8 * min(self.block_rows, self._n - s))
        return found

    def _translate(self, slots: np.ndarray) -> np.ndarray:
        out = np.full(slots.shape, PAD_ID, dtype=np.int64)
        ok = slots >= 0
        flat = slots[ok]
        order = np.argsort(flat, kind="stable")  # read the id table front to back, one window at a time
        srt = flat[order]
        vals = np.empty(srt.size, np.int64)
        cuts = np.searchsorted(srt, np.arange(0, self._n + self.block_rows, self.block_rows))
        for w, (a, b) in enumerate(zip(cuts[:-1].tolist(), cuts[1:].tolist())):
            if a == b:
                continue
            vals[a:b] = self._slot_ids[srt[a:b]]
            # page faults map neighbouring pages too: release the window before the next one
            self._release(self._ids_at + 8 * w * self.block_rows, 8 * min(self.block_rows, self._n - w * self.block_rows))
        got = np.empty(flat.size, np.int64)
        got[order] = vals
        out[ok] = got
        return out

    def search(self, queries: Any, k: int, **params: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._coerce(queries, "queries")
        k = check_k(k)
        self.check_params(params)
        dist = np.full((q.shape[0], k), PAD_HAMMING, dtype=np.int32)
        slots = np.full((q.shape[0], k), PAD_ID, dtype=np.int64)
        if q.shape[0] == 0 or self._n == 0:
            return dist, slots
        for s in range(0, self._n, self.block_rows):
            e = min(s + self.block_rows, self._n)
            d, i = faiss.knn_hamming(q, self._codes[s:e], min(k, e - s))
            self._release(self._codes_at + s * self._codes.shape[1], (e - s) * self._codes.shape[1])
            i = np.where(i >= 0, i + s, PAD_ID)
            d = np.where(i >= 0, d, PAD_HAMMING).astype(np.int32)
            # earlier blocks hold earlier slots: a stable sort keeps equal distances in slot order
            both_d, both_i = np.concatenate([dist, d], 1), np.concatenate([slots, i], 1)
            order = np.argsort(both_d, axis=1, kind="stable")[:, :k]
            dist, slots = np.take_along_axis(both_d, order, 1), np.take_along_axis(both_i, order, 1)
        return dist, self._translate(slots)

    def range_search(self, queries: Any, radius: Any, **params: int) -> RangeResult:
        q = self._coerce(queries, "queries")
        r = self._check_radius(radius)
        self.check_params(params)
        got_q, got_d, got_s = [], [], []
        for s in range(0, self._n, self.block_rows):
            e = min(s + self.block_rows, self._n)
            block = faiss.IndexBinaryFlat(self.bits)  # one block copied at a time
            block.add(np.ascontiguousarray(self._codes[s:e]))
            self._release(self._codes_at + s * self._codes.shape[1], (e - s) * self._codes.shape[1])
            lims, d, lab = block.range_search(q, r + 1)
            lims = lims.astype(np.int64)
            del block
            got_q.append(np.repeat(np.arange(q.shape[0]), np.diff(lims)))
            got_d.append(d.astype(np.int32))
            got_s.append(lab.astype(np.int64) + s)
        qi = np.concatenate(got_q) if got_q else np.empty(0, np.int64)
        dist = np.concatenate(got_d) if got_d else np.empty(0, np.int32)
        slot = np.concatenate(got_s) if got_s else np.empty(0, np.int64)
        order = np.lexsort((slot, dist, qi))
        lims = np.zeros(q.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(qi, minlength=q.shape[0]), out=lims[1:])
        return RangeResult(lims, dist[order], self._translate(slot[order]))

    # ------------------------------------------------------------------ read-only
    def _read_only(self, what: str) -> InputError:
        return InputError(f"{what}(): {self.path} is opened memory-mapped (read-only); load it without mmap to change it")

    def train(self, codes: Any) -> None:
        raise self._read_only("train")

    def add(self, codes: Any, ids: Any | None = None, meta: Mapping[str, list[Any]] | None = None) -> np.ndarray:
        raise self._read_only("add")

    def remove(self, ids: Any, missing: str = "error") -> int:
        raise self._read_only("remove")

    def compact(self) -> None:
        """Nothing to reclaim: a flat file holds no removed rows."""

    def save(self, path: str | os.PathLike[str]) -> None:
        raise self._read_only("save")

    def __repr__(self) -> str:
        return f"<MappedFlatIndex {self.path} bits={self.bits} n={self._n}>"


def open_mapped(path: str | os.PathLike[str], verify: bool = True) -> MappedFlatIndex:
    """Open a saved ``flat`` index memory-mapped (``load_index(path, mmap=True)``)."""
    from bitseek.index.persist import open_index_file

    p = Path(path)
    header, layout = open_index_file(p, verify=verify)
    engine = header.get("engine", header.get("backend"))
    if engine != "flat":
        raise InputError(f"{p}: mmap=True opens flat indexes; this file holds a {engine!r} index (load it without mmap)")
    try:
        bits, n_slots, n_alive = int(header["dim"]), int(header["n_slots"]), int(header["n_alive"])
        (f_at, f_len), (i_at, i_len) = layout["faiss"], layout["ids"]
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFileError(f"{p}: corrupt index header ({type(e).__name__}: {e})") from None
    if i_len != 8 * n_slots or n_slots != n_alive:
        raise IndexFileError(f"{p}: ids section holds {i_len} bytes for {n_slots} rows ({n_alive} alive)")
    with p.open("rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    payload = np.frombuffer(mm, dtype=np.uint8, count=f_len, offset=f_at)
    try:
        info = inspect_binary(payload)  # walks the header only; the codes are a view
    except PayloadError as e:
        raise IndexFileError(f"{p}: damaged or crafted faiss payload ({e})") from None
    if info.fourcc != "IBxF" or info.d != bits or info.ntotal != n_slots:
        raise IndexFileError(f"{p}: payload is {info.fourcc} with {info.ntotal} {info.d}-bit rows, the header says "
                             f"flat with {n_slots} {bits}-bit rows")
    obj = MappedFlatIndex(bits)
    obj.path, obj._mm, obj._n = p, mm, n_slots
    obj._codes_at, obj._ids_at = f_at + _FLAT_CODES_AT, i_at
    obj._codes = np.frombuffer(mm, dtype=np.uint8, count=n_slots * (bits // 8), offset=obj._codes_at).reshape(
        n_slots, bits // 8)
    obj._slot_ids = np.frombuffer(mm, dtype="<i8", count=n_slots, offset=i_at)
    if "meta" in layout:
        m_at, m_len = layout["meta"]
        try:
            obj._meta = MetaStore.from_bytes(bytes(mm[m_at : m_at + m_len]))
        except InputError as e:
            raise IndexFileError(f"{p}: inconsistent index file ({e})") from None
    return obj
