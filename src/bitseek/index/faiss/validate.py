"""Walk a serialized faiss index and check every size field against the bytes present, before faiss
allocates anything.

faiss trusts the counts in its own files: a checksum-valid file whose inverted-list size (or
``nlist``, or a vector length) is huge makes ``deserialize_index_binary`` allocate that much and die
with ``std::bad_alloc``. Every count that drives an allocation must therefore be covered by data that
is really in the buffer, which this walker checks for the layouts bitseek writes (faiss 1.x format:
``IBxF`` flat, ``IBwF`` IVF with ``ilar`` lists, ``IBHf`` HNSW, ``IBHm`` multi-hash, ``IBHh`` hash,
``IxFI`` float inner-product flat). Anything else is refused rather than handed to faiss.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitseek.errors import InputError

__all__ = ["PayloadError", "PayloadInfo", "inspect_binary", "inspect_float"]

_MAX_DEPTH = 4  # IVF -> HNSW quantizer -> flat storage is 3 levels
_MAX_UNTRAINED_NLIST = 1 << 20
_MAX_EF = 1 << 16  # HNSW search widths; faiss allocates ef-sized queues per search  # lists faiss allocates (~48 bytes each) for an untrained IVF


class PayloadError(InputError):
    """The faiss payload is malformed or claims more data than it holds."""


@dataclass
class PayloadInfo:
    """What the walker learned: the faiss type and the sizes that matter for consistency checks."""

    fourcc: str
    d: int
    ntotal: int
    fields: dict[str, Any] = field(default_factory=dict)
    children: dict[str, "PayloadInfo"] = field(default_factory=dict)


class _Reader:
    def __init__(self, buf: Any, labels: bool = True) -> None:
        self.buf = memoryview(np.ascontiguousarray(buf, dtype=np.uint8)).cast("B")
        self.pos = 0
        self.labels = labels  # collect the IVF lists' labels (False: a mapped file, leave them on disk)

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.left:
            raise PayloadError(f"{what} claims {n} bytes but only {self.left} remain")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        s = struct.Struct("<" + fmt)
        vals = s.unpack(self.take(s.size, what))
        return vals[0] if len(vals) == 1 else vals

    def vector(self, elem: int, what: str) -> memoryview:
        """A faiss ``std::vector`` (uint64 length then raw elements)."""
        n = self.unpack("Q", f"{what} length")
        if n > self.left // max(elem, 1):
            raise PayloadError(f"{what} claims {n} elements of {elem} bytes but only {self.left} bytes remain")
        return self.take(n * elem, what)

    def fourcc(self) -> str:
        raw = bytes(self.take(4, "index type tag"))
        return raw.decode("latin-1")


def _binary_header(r: _Reader, tag: str) -> tuple[int, int, int]:
    d, code_size, ntotal, _trained, _metric = _binary_header_full(r, tag)
    return d, code_size, ntotal


def _binary_header_full(r: _Reader, tag: str) -> tuple[int, int, int, int, int]:
    d, code_size, ntotal, trained, metric = r.unpack("iiqBi", f"{tag} header")
    if d <= 0 or d % 8 or code_size != d // 8:
        raise PayloadError(f"{tag}: invalid code length d={d}, code_size={code_size}")
    if ntotal < 0:
        raise PayloadError(f"{tag}: negative ntotal {ntotal}")
    return d, code_size, ntotal, trained, metric


def _flat(r: _Reader, tag: str) -> PayloadInfo:
    d, cs, ntotal = _binary_header(r, tag)
    xb = r.vector(1, f"{tag} codes")
    if len(xb) != ntotal * cs:
        raise PayloadError(f"{tag}: {len(xb)} code bytes for ntotal={ntotal} x {cs} bytes")
    return PayloadInfo(tag, d, ntotal)


def _ivf(r: _Reader, tag: str, depth: int) -> PayloadInfo:
    d, cs, ntotal, trained, _metric = _binary_header_full(r, tag)
    nlist, nprobe = r.unpack("QQ", f"{tag} nlist/nprobe")
    quantizer = _binary(r, depth + 1)
    if quantizer.d != d:
        raise PayloadError(f"{tag}: quantizer holds {quantizer.d}-bit codes, the index {d}-bit")
    # a trained quantizer holds exactly one centroid per list, and those bytes are in the buffer,
    # so nlist is bounded by the file size before anything is allocated for it
    # (an untrained, empty index has no centroids yet: there nlist is capped instead)
    untrained_ok = not trained and ntotal == 0 and quantizer.ntotal == 0 and nlist <= _MAX_UNTRAINED_NLIST
    if nlist < 1 or (nlist != quantizer.ntotal and not untrained_ok) or (trained not in (0, 1)):
        raise PayloadError(f"{tag}: nlist={nlist} but the quantizer holds {quantizer.ntotal} centroids")
    if not trained and quantizer.ntotal:
        raise PayloadError(f"{tag}: marked untrained but holds {quantizer.ntotal} centroids")
    if not 1 <= nprobe <= nlist:
        raise PayloadError(f"{tag}: nprobe={nprobe} outside 1..{nlist}")
    dm_type = r.unpack("B", f"{tag} direct map type")
    if dm_type not in (0, 1, 2):
        raise PayloadError(f"{tag}: unknown direct map type {dm_type}")
    r.vector(8, f"{tag} direct map")
    if dm_type == 2:
        r.vector(16, f"{tag} direct map hashtable")
    invlists_at = r.pos
    il = r.fourcc()
    if il != "ilar":
        raise PayloadError(f"{tag}: inverted lists of type {il!r} are not supported")
    il_nlist, il_cs = r.unpack("QQ", "inverted lists header")
    if il_nlist != nlist or il_cs != cs:
        raise PayloadError(f"inverted lists: nlist={il_nlist}, code_size={il_cs}; the index says {nlist}, {cs}")
    kind = r.fourcc()
    if kind == "full":
        sizes = np.frombuffer(r.vector(8, "list sizes"), dtype="<u8")
        if sizes.size != nlist:
            raise PayloadError(f"inverted lists: {sizes.size} sizes for {nlist} lists")
    elif kind == "sprs":
        pairs = np.frombuffer(r.vector(8, "sparse list sizes"), dtype="<u8")
        if pairs.size % 2:
            raise PayloadError("inverted lists: odd number of sparse size entries")
        lists, sizes = pairs[0::2], pairs[1::2]
        if sizes.size and int(lists.max()) >= nlist:
            raise PayloadError(f"inverted lists: list number {int(lists.max())} >= nlist {nlist}")
        if lists.size > 1 and (np.diff(lists.astype(np.int64)) <= 0).any():
            raise PayloadError("inverted lists: sparse list numbers are not increasing")
    else:
        raise PayloadError(f"inverted lists: unknown size layout {kind!r}")
    # every size must be backed by its codes and ids: compare before multiplying anything large
    per_item = cs + 8
    if sizes.size and int(sizes.max()) > r.left // per_item:
        raise PayloadError(f"inverted lists: a list claims {int(sizes.max())} entries, more than the file holds")
    total = int(sizes.sum(dtype=np.uint64))
    if total != ntotal:
        raise PayloadError(f"inverted lists hold {total} entries, the index says ntotal={ntotal}")
    lists_at = r.pos
    data = np.frombuffer(r.take(total * per_item, "inverted list data"), dtype=np.uint8)
    full = sizes.astype(np.int64) if kind == "full" else np.zeros(nlist, np.int64)
    if kind == "sprs":
        full[lists.astype(np.int64)] = sizes.astype(np.int64)
    fields: dict[str, Any] = {"nlist": int(nlist), "nprobe": int(nprobe), "invlists_at": invlists_at,
                              "lists_at": lists_at, "list_sizes": full}
    if r.labels:
        # per non-empty list, in list order: its codes, then its int64 labels (for the engine to check)
        nonzero = full[full > 0]
        starts = np.concatenate([[0], np.cumsum(nonzero * per_item)[:-1]]) if nonzero.size else np.empty(0, np.int64)
        labels = [data[s + n * cs : s + n * per_item].view("<i8") for s, n in zip(starts.tolist(), nonzero.tolist())]
        fields["list_ids"] = np.concatenate(labels).astype(np.int64) if labels else np.empty(0, np.int64)
    return PayloadInfo(tag, d, ntotal, fields, {"quantizer": quantizer})


def _hnsw(r: _Reader, tag: str, depth: int) -> PayloadInfo:
    d, _cs, ntotal = _binary_header(r, tag)
    r.vector(8, f"{tag} assign_probas")
    cum = np.frombuffer(r.vector(4, f"{tag} cum_nneighbor_per_level"), dtype="<i4")
    levels = np.frombuffer(r.vector(4, f"{tag} levels"), dtype="<i4")
    offsets = np.frombuffer(r.vector(8, f"{tag} offsets"), dtype="<u8")
    neighbors = np.frombuffer(r.vector(4, f"{tag} neighbors"), dtype="<i4")
    entry, max_level, ef_c, ef_s, _beam = r.unpack("iiiii", f"{tag} graph fields")
    if levels.size != ntotal or offsets.size != ntotal + 1:
        raise PayloadError(f"{tag}: {levels.size} levels / {offsets.size} offsets for ntotal={ntotal}")
    # the graph layout is fully determined by the per-level neighbour counts and each node's level:
    # check it exactly, so that no search can walk outside the tables
    if cum.size < 2 or int(cum[0]) != 0 or (np.diff(cum.astype(np.int64)) < 0).any():
        raise PayloadError(f"{tag}: neighbour counts per level are not a cumulative table")
    if ntotal:
        if int(levels.min()) < 1 or int(levels.max()) >= cum.size:
            raise PayloadError(f"{tag}: node levels outside 1..{cum.size - 1}")
        expect = np.concatenate([[0], np.cumsum(cum.astype(np.int64)[levels])])
        if not np.array_equal(offsets.astype(np.int64), expect) or int(expect[-1]) != neighbors.size:
            raise PayloadError(f"{tag}: neighbour offsets do not match the node levels")
        if not (0 <= entry < ntotal and max_level == int(levels.max()) - 1 and int(levels[entry]) - 1 == max_level):
            raise PayloadError(f"{tag}: entry point {entry} / max level {max_level} do not match the graph")
    elif offsets.size != 1 or int(offsets[0]) != 0 or neighbors.size:
        raise PayloadError(f"{tag}: an empty graph with neighbour data")
    if neighbors.size and (int(neighbors.min()) < -1 or int(neighbors.max()) >= max(ntotal, 1)):
        raise PayloadError(f"{tag}: neighbour ids outside 0..{ntotal - 1}")
    if not 1 <= ef_c <= _MAX_EF or not 1 <= ef_s <= _MAX_EF:
        raise PayloadError(f"{tag}: efConstruction={ef_c}, efSearch={ef_s} must be in 1..{_MAX_EF}")
    storage = _binary(r, depth + 1)
    if storage.fourcc != "IBxF" or storage.ntotal != ntotal or storage.d != d:
        raise PayloadError(f"{tag}: storage is {storage.fourcc} with {storage.ntotal} rows, expected IBxF with {ntotal}")
    m = int(cum[1] - cum[0]) // 2 if cum.size > 1 else 0
    return PayloadInfo(tag, d, ntotal, {"m": m, "ef_construction": ef_c, "ef_search": ef_s}, {"storage": storage})


def _bits_needed(n: int) -> int:
    return int(n).bit_length()


def _multihash(r: _Reader, tag: str, depth: int) -> PayloadInfo:
    d, _cs, ntotal = _binary_header(r, tag)
    storage = _binary(r, depth + 1)
    if storage.fourcc != "IBxF" or storage.ntotal != ntotal or storage.d != d:
        raise PayloadError(f"{tag}: storage is {storage.fourcc} with {storage.ntotal} rows, expected IBxF with {ntotal}")
    b, nhash, nflip = r.unpack("iii", f"{tag} b/nhash/nflip")
    if not (1 <= b <= 64 and 1 <= nhash and nhash * b <= d and nflip >= 0):
        raise PayloadError(f"{tag}: invalid b={b}, nhash={nhash}, nflip={nflip} for {d}-bit codes")
    for t in range(nhash):
        id_bits, sz = r.unpack("iQ", f"{tag} table {t} header")
        if not 0 <= id_bits <= 63 or sz > ntotal:
            raise PayloadError(f"{tag} table {t}: id_bits={id_bits}, {sz} buckets for {ntotal} codes")
        buf = r.vector(1, f"{tag} table {t}")
        nbit = (b + id_bits) * sz + ntotal * id_bits
        if len(buf) != (nbit + 7) // 8:
            raise PayloadError(f"{tag} table {t}: {len(buf)} bytes, the counts need {(nbit + 7) // 8}")
    return PayloadInfo(tag, d, ntotal, {"nhash": nhash, "b": b, "nflip": nflip}, {"storage": storage})


def _hash(r: _Reader, tag: str) -> PayloadInfo:
    d, cs, ntotal = _binary_header(r, tag)
    b, nflip = r.unpack("ii", f"{tag} b/nflip")
    if not (1 <= b <= min(d, 64)) or nflip < 0:
        raise PayloadError(f"{tag}: invalid b={b}, nflip={nflip}")
    sz, il_nbit = r.unpack("Qi", f"{tag} buckets")
    if sz > ntotal or not 0 <= il_nbit <= 64:
        raise PayloadError(f"{tag}: {sz} buckets for {ntotal} codes, il_nbit={il_nbit}")
    buf = r.vector(1, f"{tag} bucket table")
    if len(buf) < ((b + il_nbit) * sz + 7) // 8:
        raise PayloadError(f"{tag}: bucket table too short for {sz} buckets")
    total = 0
    for j in range(sz):
        ids = r.vector(8, f"{tag} bucket {j} ids")
        vecs = r.vector(1, f"{tag} bucket {j} codes")
        if len(vecs) != (len(ids) // 8) * cs:
            raise PayloadError(f"{tag} bucket {j}: codes do not match its ids")
        total += len(ids) // 8
    if total != ntotal:
        raise PayloadError(f"{tag}: buckets hold {total} codes, ntotal={ntotal}")
    return PayloadInfo(tag, d, ntotal, {"b": b, "nflip": nflip})


def _binary(r: _Reader, depth: int = 0) -> PayloadInfo:
    if depth > _MAX_DEPTH:
        raise PayloadError("index nesting is too deep")
    tag = r.fourcc()
    if tag == "IBxF":
        return _flat(r, tag)
    if tag == "IBwF":
        return _ivf(r, tag, depth)
    if tag == "IBHf":
        return _hnsw(r, tag, depth)
    if tag == "IBHm":
        return _multihash(r, tag, depth)
    if tag == "IBHh":
        return _hash(r, tag)
    raise PayloadError(f"faiss binary index type {tag!r} is not supported")


def inspect_binary(buf: Any, labels: bool = True) -> PayloadInfo:
    """Check a ``faiss.serialize_index_binary`` payload; every count is backed by bytes present.

    ``labels=False`` leaves an IVF's list labels unread (a memory-mapped file: reading them all would
    make them resident); the list layout (``invlists_at``, ``lists_at``, ``list_sizes``) is recorded."""
    r = _Reader(buf, labels)
    info = _binary(r)
    if r.left:
        raise PayloadError(f"{r.left} unexpected bytes after the faiss index")
    return info


def inspect_float(buf: Any) -> PayloadInfo:
    """Check a ``faiss.serialize_index`` payload of an ``IndexFlatIP``."""
    r = _Reader(buf)
    tag = r.fourcc()
    if tag != "IxFI":
        raise PayloadError(f"faiss index type {tag!r} is not an inner-product flat index (IxFI)")
    d, ntotal, _a, _b, _trained, metric = r.unpack("iqqqBi", f"{tag} header")
    if d <= 0 or ntotal < 0 or metric != 0:
        raise PayloadError(f"{tag}: invalid d={d}, ntotal={ntotal}, metric={metric}")
    groups = r.unpack("Q", f"{tag} vector length")
    if groups > r.left // 4:
        raise PayloadError(f"{tag}: claims {groups * 4} bytes of vectors but only {r.left} remain")
    data = r.take(groups * 4, f"{tag} vectors")
    if len(data) != ntotal * d * 4:
        raise PayloadError(f"{tag}: {len(data)} bytes of vectors for ntotal={ntotal} x {d} floats")
    if r.left:
        raise PayloadError(f"{r.left} unexpected bytes after the faiss index")
    return PayloadInfo(tag, d, ntotal)
