"""Saved ``flat`` and ``ivf`` indexes searched straight from their files (``load_index(path, mmap=True)``).

Why: 100M 64-bit codes are 800 MB of codes plus 800 MB of ids; loading copies both into memory.
Here the file is mapped read-only and only what a search touches is read.

* ``flat``: the codes are scanned in blocks of ``block_rows`` by faiss's ``knn_hamming`` (no copy),
  each block's top-k merged into the running top-k.
* ``ivf``: the saved payload already stores each inverted list as its codes followed by its ids,
  which is exactly the layout of faiss's on-disk inverted lists. So the index is rebuilt in memory
  from the payload's small part (header, the ``nlist`` centroids) plus a description of on-disk lists
  whose offsets point into this same file; faiss then maps the file read-only
  (``IO_FLAG_READ_ONLY``) and reads only the probed lists. Search is faiss's own IVF search, so
  results equal the loaded index exactly; ids come from the lists themselves.

After each search the kernel is told the touched pages are not needed (``MADV_DONTNEED``): the page
cache keeps them for the next search, but they stop counting in this process's resident memory,
which stays at about one scan block (flat, 64 MB by default) or one batch of queries' probed lists
(ivf: batches sized so that about 64 MB of lists are touched before each release) however large the
index. Only the ids of returned results are read from the id table, window by
window (a page fault maps neighbouring pages too, so random reads across the whole table would
otherwise make most of it resident). ``tests/index/test_mapped.py`` checks equality with the
in-memory engines (same tie rule).

faiss's own ``IO_FLAG_MMAP`` does not apply to our files: for binary indexes it maps only on-disk
inverted lists, and our files wrap the faiss payload in a checksummed container. The on-disk lists
of an ``ivf`` file are therefore described by us, from the payload walked by ``validate.py``.

Mapped indexes are read-only: ``add``/``remove``/``train``/``save`` say so. An ``auto`` file opens
as its inner ``flat`` or ``ivf`` engine, mapped, with its tuning record checked as on load.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bitseek.errors import InputError
from bitseek.index.api import PAD_HAMMING, PAD_ID, IndexFileError, RangeResult, SearchIndex, as_ids, check_k
from bitseek.index.faiss.binary import BinaryFlatIndex
from bitseek.index.faiss.ivf import BinaryIVFIndex
from bitseek.index.faiss.validate import PayloadError, PayloadInfo, inspect_binary
from bitseek.index.meta import MetaStore

__all__ = ["MappedFlatIndex", "MappedIVFIndex", "open_mapped"]

_FLAT_CODES_AT = 4 + struct.calcsize("<iiqBi") + 8  # fourcc, header, vector length, then the codes
_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux value, for faiss's own mapping (not a Python mmap object)
log = logging.getLogger(__name__)


class _MappedFile:
    """What every mapped index shares: the file's mapping, its id table on disk, read-only refusals."""

    block_rows = 1 << 23  # 8M codes a block (64 MB at 64 bits)

    # the file, set up by open_mapped
    _mm: mmap.mmap
    _fh: Any
    _slot_ids: np.ndarray
    _ids_at: int
    _n: int
    _meta: MetaStore
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

    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        """The id table, memory-mapped (read-only)."""
        return self._slot_ids

    def contains(self, ids: Any) -> np.ndarray:
        want = as_ids(ids)
        found = np.zeros(want.size, bool)
        for s in range(0, self._n, self.block_rows):
            found |= np.isin(want, self._slot_ids[s : s + self.block_rows])
            self._release(self._ids_at + 8 * s, 8 * min(self.block_rows, self._n - s))
        return found

    def _read_only(self, what: str) -> InputError:
        return InputError(f"{what}(): {self.path} is opened memory-mapped (read-only); load it without mmap to change it")

    def train(self, codes: Any) -> None:
        raise self._read_only("train")

    def add(self, codes: Any, ids: Any | None = None, meta: Mapping[str, list[Any]] | None = None) -> np.ndarray:
        raise self._read_only("add")

    def remove(self, ids: Any, missing: str = "error") -> int:
        raise self._read_only("remove")

    def compact(self) -> None:
        """Nothing to reclaim: a saved flat or ivf file holds no removed rows."""

    def save(self, path: str | os.PathLike[str]) -> None:
        raise self._read_only("save")

    def _file_parts(self) -> Any:  # what an auto index's save would write
        raise self._read_only("save")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} bits={self.dim} n={self._n}>"


class MappedFlatIndex(_MappedFile, BinaryFlatIndex):
    """Exact Hamming scan over codes that stay in the file (see the module docstring)."""

    def __init__(self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None,
                 **kw: Any) -> None:
        super().__init__(bits, params, options, build=False)

    _codes: np.ndarray
    _codes_at: int

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


class MappedIVFIndex(_MappedFile, BinaryIVFIndex):
    """faiss's IVF search over inverted lists that stay in the file (see the module docstring)."""

    def __init__(self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None,
                 **kw: Any) -> None:
        super().__init__(bits, params, options, build=False)

    resident_bytes = 64 << 20  # list data one batch of queries may touch before it is released

    _lists_addr: int  # where faiss mapped the file's list data, page-aligned
    _lists_len: int

    def _release_lists(self) -> None:
        """The probed lists leave this process's resident set (faiss's mapping; the page cache keeps them)."""
        if self._lists_len > 0:
            _madvise_dontneed(self._lists_addr, self._lists_len)

    def _batches(self, nq: int, opts: dict[str, int]) -> range:
        """Query batches whose probed lists fit ``resident_bytes`` on average (results do not depend on it)."""
        per_query = self._nprobe(opts) * self._lists_len / max(self.nlist, 1)
        return range(0, nq, max(1, int(self.resident_bytes // max(per_query, 1.0))))

    def search(self, queries: Any, k: int, **params: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._coerce(queries, "queries")
        k = check_k(k)
        with self._lock.read():
            opts = self._call_options(params)
            dist, ids = self._pads(q.shape[0], k)
            if q.shape[0] == 0 or self._n == 0:
                return dist, ids
            batches = self._batches(q.shape[0], opts)
            for s in batches:
                e = min(s + batches.step, q.shape[0])
                try:  # labels are our ids: faiss holds them in the lists
                    dist[s:e], ids[s:e] = self._knn_ordered(np.ascontiguousarray(q[s:e]), k, opts)
                finally:
                    self._release_lists()
        return dist, ids

    def range_search(self, queries: Any, radius: Any, **params: int) -> RangeResult:
        q = self._coerce(queries, "queries")
        r = self._check_radius(radius)
        nq = q.shape[0]
        with self._lock.read():
            opts = self._call_options(params)
            if nq == 0 or self._n == 0:
                return RangeResult(np.zeros(nq + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64))
            batches = self._batches(nq, opts)
            counts, dists, labels = [], [], []
            for s in batches:
                try:
                    lims, d, lab = self._range(np.ascontiguousarray(q[s : s + batches.step]), r, opts)
                finally:
                    self._release_lists()
                counts.append(np.diff(lims))
                dists.append(d)
                labels.append(lab)
        lims = np.zeros(nq + 1, np.int64)
        np.cumsum(np.concatenate(counts), out=lims[1:])
        lab = np.concatenate(labels)
        return self._range_result(nq, lims, np.concatenate(dists), lab, lab)


def _madvise_dontneed(addr: int, length: int) -> None:
    """``madvise(MADV_DONTNEED)`` on a range faiss mapped; where libc has none, memory just stays counted."""
    global _LIBC_MADVISE
    if _LIBC_MADVISE is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes, fn.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
            _LIBC_MADVISE = fn
        except (OSError, AttributeError):
            _LIBC_MADVISE = False
    if _LIBC_MADVISE and _LIBC_MADVISE(addr, length, _MADV_DONTNEED) != 0:
        log.debug("madvise(MADV_DONTNEED) failed: errno %d", ctypes.get_errno())


_LIBC_MADVISE: Any = None


def _header_fields(p: Path, header: Mapping[str, Any], layout: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """(bits, rows) of a flat or ivf file, its sections checked against the header."""
    try:
        bits, n_slots, n_alive = int(header["dim"]), int(header["n_slots"]), int(header["n_alive"])
        i_len = layout["ids"][1]
        layout["faiss"]
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFileError(f"{p}: corrupt index header ({type(e).__name__}: {e})") from None
    if not set(layout) <= {"faiss", "ids", "meta"}:
        raise IndexFileError(f"{p}: expected sections faiss, ids (and meta), found {sorted(layout)}")
    if i_len != 8 * n_slots or n_slots != n_alive:
        raise IndexFileError(f"{p}: ids section holds {i_len} bytes for {n_slots} rows ({n_alive} alive)")
    return bits, n_slots


def _on_disk_lists(p: Path, info: PayloadInfo, lists_at: int, code_size: int, fd: int, file_size: int) -> bytes:
    """faiss's serialised ``OnDiskInvertedLists`` ("ilod") for the lists as they lie in this file.

    Each list: (size, capacity = size, byte offset of its codes in the file); its ids follow its
    codes, as faiss's on-disk lists expect. No free slots (read-only); the file by its open
    descriptor, so that faiss maps the very file whose checksum and layout were checked."""
    sizes = info.fields["list_sizes"].astype(np.int64)
    nlist = sizes.size
    starts = np.zeros(nlist, np.int64)
    np.cumsum(sizes[:-1] * (code_size + 8), out=starts[1:])
    offsets = np.where(sizes > 0, lists_at + starts, 0)
    lists = np.stack([sizes, sizes, offsets], axis=1).astype("<u8")
    fname = f"/proc/self/fd/{fd}"
    name = (fname if os.path.exists(fname) else str(p.resolve())).encode()
    return b"".join([b"ilod", struct.pack("<QQQ", nlist, code_size, nlist), lists.tobytes(), struct.pack("<Q", 0),
                     struct.pack("<Q", len(name)), name, struct.pack("<Q", file_size)])


def _open_ivf(p: Path, header: Mapping[str, Any], info: PayloadInfo, payload: np.ndarray, f_at: int,
              fd: int, file_size: int) -> MappedIVFIndex:
    bits = int(header["dim"])
    try:
        BinaryIVFIndex._check_payload(info)
        params = BinaryIVFIndex._header_params(dict(header["params"]), info)
        options = {str(k): int(v) for k, v in dict(header["options"]).items()}
        obj = MappedIVFIndex(bits, params, options)
    except (KeyError, TypeError, ValueError, InputError) as e:  # ConfigError is an InputError
        raise IndexFileError(f"{p}: inconsistent index file ({e})") from None
    ilod = _on_disk_lists(p, info, f_at + int(info.fields["lists_at"]), bits // 8, fd, file_size)
    raw = np.frombuffer(bytes(payload[: int(info.fields["invlists_at"])]) + ilod, dtype=np.uint8)
    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(raw, reader.data)
    try:
        idx = faiss.read_index_binary(reader, faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as e:
        raise IndexFileError(f"{p}: faiss could not map the inverted lists ({e})") from None
    if not isinstance(idx, faiss.IndexBinaryIVF) or int(idx.ntotal) != info.ntotal or int(idx.d) != bits:
        raise IndexFileError(f"{p}: the mapped payload is not the {bits}-bit ivf index its header describes")
    od = faiss.downcast_InvertedLists(idx.invlists)
    od.prefetch_nthread = 0  # faiss would start threads to touch the probed lists ahead of the scan
    obj._faiss = idx
    obj._after_restore()
    obj._apply_options()
    base = int(faiss.rev_swig_ptr(od.ptr, 1).ctypes.data)
    first = f_at + int(info.fields["lists_at"])
    a = first - first % _PAGE
    obj._lists_addr, obj._lists_len = base + a, int(info.ntotal) * (bits // 8 + 8) + (first - a)
    return obj


def _open_engine(p: Path, header: Mapping[str, Any], layout: Mapping[str, tuple[int, int]]) -> _MappedFile:
    engine = header.get("engine", header.get("backend"))
    if engine not in ("flat", "ivf"):
        raise InputError(f"{p}: mmap=True opens flat and ivf indexes (and auto ones over them); this file holds a "
                         f"{engine!r} index (load it without mmap)")
    bits, n_slots = _header_fields(p, header, layout)
    (f_at, f_len), (i_at, _) = layout["faiss"], layout["ids"]
    with p.open("rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        payload = np.frombuffer(mm, dtype=np.uint8, count=f_len, offset=f_at)
        try:
            info = inspect_binary(payload, labels=False)  # walks the headers; codes and ids stay unread
        except PayloadError as e:
            raise IndexFileError(f"{p}: damaged or crafted faiss payload ({e})") from None
        want = "IBxF" if engine == "flat" else "IBwF"
        if info.fourcc != want or info.d != bits or info.ntotal != n_slots:
            raise IndexFileError(f"{p}: payload is {info.fourcc} with {info.ntotal} {info.d}-bit rows, the header says "
                                 f"{engine} with {n_slots} {bits}-bit rows")
        obj: _MappedFile
        if engine == "flat":
            flat = MappedFlatIndex(bits)
            flat._codes_at = f_at + _FLAT_CODES_AT
            flat._codes = np.frombuffer(mm, dtype=np.uint8, count=n_slots * (bits // 8),
                                        offset=flat._codes_at).reshape(n_slots, bits // 8)
            obj = flat
        else:
            obj = _open_ivf(p, header, info, payload, f_at, fh.fileno(), len(mm))
    obj.path, obj._mm, obj._n, obj._ids_at = p, mm, n_slots, i_at
    obj._slot_ids = np.frombuffer(mm, dtype="<i8", count=n_slots, offset=i_at)
    if "meta" in layout:
        m_at, m_len = layout["meta"]
        try:
            obj._meta = MetaStore.from_bytes(bytes(mm[m_at : m_at + m_len]))
        except InputError as e:
            raise IndexFileError(f"{p}: inconsistent index file ({e})") from None
    return obj


def open_mapped(path: str | os.PathLike[str], verify: bool = True) -> SearchIndex:
    """Open a saved ``flat``, ``ivf`` or ``auto`` index memory-mapped (``load_index(path, mmap=True)``)."""
    from bitseek.index.persist import open_index_file

    p = Path(path)
    header, layout = open_index_file(p, verify=verify)
    if header.get("engine") == "auto":
        from bitseek.index.faiss.auto import AutoIndex

        return AutoIndex._assemble(p, header, lambda inner: _open_engine(p, inner, layout))
    return _open_engine(p, header, layout)
