"""The interface every search backend implements, and the layer that makes them behave alike.

Why a layer over faiss at all: faiss labels results by row position and positions move when rows are
removed; several faiss indexes can neither remove rows nor range-search; faiss files carry no
checksum. ``Index`` gives every backend one contract — stable int64 ids, removal, padded top-k,
inclusive-radius search sorted best first, one checksummed file — for the price of one array lookup
per returned result (see ``benchmarks/bench_index.py`` for the measured overhead).

Conventions (also in ``docs/index.md``):

* ids are non-negative int64; ``-1`` (``PAD_ID``) marks "no result".
* ``search`` returns ``(distances, ids)`` of shape ``(nq, k)``. When fewer than ``k`` items qualify the
  row is padded with id ``-1`` and distance ``PAD_HAMMING`` (int32 max, what faiss itself uses) for
  Hamming backends or ``PAD_SIMILARITY`` (``-inf``) for inner-product backends.
* Ties: equal distances are ordered by ascending insertion position (removals keep the relative order
  of the rest), and at a tied k-th place the earliest-inserted items are the ones kept. Exact backends
  guarantee both; approximate ones (MultiHash, HNSW) order the ties they return the same way but may
  keep other tied items at the k-th place; IVF orders returned ties by id.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from bitseek._array import as_ids as _as_ids
from bitseek._array import as_numpy
from bitseek.errors import BitseekError, ConfigError, FileFormatError, InputError
from bitseek.index.idmap import IdMap
from bitseek.index.persist import read_index_file, write_index_file

__all__ = [
    "Index",
    "RangeResult",
    "IndexNotTrainedError",
    "PAD_ID",
    "PAD_HAMMING",
    "PAD_SIMILARITY",
    "as_ids",
]

PAD_ID = -1
PAD_HAMMING = int(np.iinfo(np.int32).max)
PAD_SIMILARITY = float("-inf")


class IndexNotTrainedError(InputError):
    """A trained backend (IVF) was asked to add or search before ``train``."""


@dataclass(frozen=True)
class RangeResult:
    """Radius-search hits of ``nq`` queries in the compact faiss layout.

    Query ``i`` owns ``ids[lims[i]:lims[i + 1]]`` and the matching ``distances``, best first
    (Hamming: ascending distance; inner product: descending similarity), ties in insertion order.
    ``result[i]`` returns that ``(ids, distances)`` pair; iterating yields one pair per query.
    """

    lims: np.ndarray
    ids: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return int(self.lims.shape[0] - 1)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"query {i} out of range for {n} queries")
        i %= n
        a, b = int(self.lims[i]), int(self.lims[i + 1])
        return self.ids[a:b], self.distances[a:b]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def counts(self) -> np.ndarray:
        """Number of hits per query."""
        return np.diff(self.lims)


to_numpy = as_numpy  # the one coercion (bitseek._array)


def as_ids(ids: Any, n: int | None = None, name: str = "ids") -> np.ndarray:
    """Validate ids: integers, 1-D (a scalar is one id), non-negative; returned as int64."""
    return _as_ids(ids, n, name, what="codes")


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise InputError(f"search(): k must be a positive integer, got {k!r}")
    return int(k)


class Index(ABC):
    """One search backend: stable ids, top-k and radius search, removal, one-file persistence.

    Subclasses wrap one faiss index in ``self._faiss`` and implement the underscore hooks; the public
    methods here validate input, translate faiss row labels into ids and hold a lock so that
    option changes made for one call (MIH ``nflip``, HNSW ``efSearch``) never leak into another.
    """

    backend: ClassVar[str] = ""  # name used in files (and the spec's first token)
    metric: ClassVar[str] = "hamming"  # "hamming" (smaller is closer) or "ip" (larger is closer)
    exact: ClassVar[bool] = False  # top-k equals brute force, tie rule included
    labels_are_ids: ClassVar[bool] = False  # faiss stores our ids itself instead of row positions
    sort_ties: ClassVar[bool] = False  # backend returns equal distances in no useful order: sort them
    tombstones: ClassVar[bool] = False  # removed rows stay in faiss (slot id -1) until a rebuild
    name_patterns: ClassVar[tuple[str, ...]] = ()  # regexes for the spec's first token
    options_spec: ClassVar[dict[str, tuple[int, int]]] = {}  # option -> (default, minimum)
    pad_distance: ClassVar[float] = PAD_HAMMING
    _registry: ClassVar[dict[str, type["Index"]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("backend"):
            Index._registry[cls.backend] = cls

    def __init__(
        self, dim: int, params: Mapping[str, int] | None = None, options: Mapping[str, int] | None = None
    ) -> None:
        self.dim = int(dim)
        self.params: dict[str, int] = dict(params or {})
        self._options: dict[str, int] = {k: d for k, (d, _) in self.options_spec.items()}
        self._idmap = IdMap()
        self._lock = threading.RLock()
        self._faiss: Any = None
        self._build()
        self.set_options(**dict(options or {}))

    # ================================================================== hooks for backends
    @abstractmethod
    def _build(self) -> None:
        """Create the empty faiss index in ``self._faiss``."""

    @abstractmethod
    def _coerce(self, x: Any, name: str) -> np.ndarray:
        """Validate codes/queries and return them in the faiss input form."""

    @abstractmethod
    def _check_radius(self, radius: Any) -> Any:
        """Validate a range-search radius (Hamming bits or similarity threshold)."""

    @abstractmethod
    def _knn(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k in label space (slots, or ids if ``labels_are_ids``), padded with label -1."""

    @abstractmethod
    def _range(self, q: np.ndarray, radius: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inclusive radius hits as (lims, distances, labels), in any order within a query."""

    @abstractmethod
    def _serialize(self) -> np.ndarray:
        """The faiss index as bytes (uint8 array)."""

    @abstractmethod
    def _restore_faiss(self, buf: np.ndarray) -> None:
        """Inverse of ``_serialize``; raise InputError if the object is not what this backend holds."""

    @abstractmethod
    def _name(self) -> str:
        """The canonical first token of the spec (``flat``, ``ivf1024``, ``multihash4x16`` ...)."""

    def _add_rows(self, x: np.ndarray, ids: np.ndarray) -> None:
        self._faiss.add(x)

    def _remove_rows(self, slots: np.ndarray, ids: np.ndarray) -> None:
        """Default: the faiss index deletes rows and compacts the rest in order (flat storage)."""
        import faiss

        removed = self._faiss.remove_ids(faiss.IDSelectorBatch(slots))
        if removed != len(slots):
            raise RuntimeError(f"faiss removed {removed} rows, expected {len(slots)}")
        self._idmap.delete(slots)

    def _apply_options(self) -> None:
        """Push ``self._options`` into the faiss object."""

    def _train(self, x: np.ndarray) -> None:
        """Backends without training ignore ``train``."""

    def _untrained_message(self) -> str:
        return f"{self.spec} index is not trained: call index.train(codes) first"

    # ================================================================== properties
    @property
    def is_trained(self) -> bool:
        return True

    @property
    def options(self) -> dict[str, int]:
        return dict(self._options)

    @property
    def spec(self) -> str:
        """Canonical factory string; ``make_index(index.spec, ...)`` builds an equivalent empty index."""
        return ",".join([self._name(), *(f"{k}={v}" for k, v in sorted(self._options.items()))])

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored items, in insertion order."""
        return self._idmap.alive_ids()

    def __len__(self) -> int:
        return self._idmap.n_alive

    def __contains__(self, item: Any) -> bool:
        try:
            ids = as_ids(item)
        except InputError:
            return False
        return ids.size == 1 and bool(self._idmap.contains(ids)[0])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} dim={self.dim} n={len(self)}>"

    # ================================================================== operations
    def set_options(self, **options: int) -> None:
        """Change search-time options (e.g. ``nprobe``); unknown names are errors."""
        for key, value in options.items():
            if key not in self.options_spec:
                valid = ", ".join(sorted(self.options_spec)) or "none"
                raise ConfigError(f"{self.backend} index has no option {key!r} (valid: {valid})")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{self.backend} option {key}: expected an integer, got {value!r}")
            lo = self.options_spec[key][1]
            if int(value) < lo:
                raise ConfigError(f"{self.backend} option {key}: must be >= {lo}, got {value}")
        with self._lock:
            self._options.update({k: int(v) for k, v in options.items()})
            self._apply_options()

    def _require_trained(self, what: str) -> None:
        if not self.is_trained:
            raise IndexNotTrainedError(f"{what}(): {self._untrained_message()}")

    def train(self, codes: Any) -> None:
        """Fit a trained backend (IVF coarse quantizer); a no-op for the others."""
        x = self._coerce(codes, "training codes")
        with self._lock:
            self._train(x)

    def add(self, codes: Any, ids: Any | None = None) -> np.ndarray:
        """Add items; returns their ids. ``ids=None`` assigns ids above any id ever added.

        Adding an id that is already present is an error (remove it first to replace a code).
        """
        x = self._coerce(codes, "codes")
        with self._lock:
            new = self._idmap.auto_ids(x.shape[0]) if ids is None else as_ids(ids, x.shape[0])
            self._require_trained("add")
            plan = self._idmap.check_new(new)
            if new.size:
                self._add_rows(x, new)
                self._idmap.append(plan)
            return new

    def add_codeset(self, codeset: Any) -> np.ndarray:
        """Add a :class:`bitseek.codes.CodeSet` (or the path of a saved one) with its ids."""
        from bitseek.codes import CodeSet

        if isinstance(codeset, (str, os.PathLike)):
            codeset = CodeSet.load(codeset)
        if not isinstance(codeset, CodeSet):
            raise InputError(f"add_codeset(): expected a CodeSet or a path, got {type(codeset).__name__}")
        if self.metric != "hamming":
            raise InputError(f"add_codeset(): a {self.backend} index holds float descriptors, not binary codes")
        if codeset.bits != self.dim:
            raise InputError(f"add_codeset(): code set has {codeset.bits}-bit codes, the index holds {self.dim}-bit")
        return self.add(codeset.codes, codeset.ids)

    def remove(self, ids: Any, missing: str = "error") -> int:
        """Remove items by id; returns how many were removed.

        ``missing="error"`` (default) raises InputError if any id is absent and then removes nothing;
        ``missing="ignore"`` skips absent ids. Repeated ids in one call count once.
        """
        if missing not in ("error", "ignore"):
            raise InputError(f"remove(): missing must be 'error' or 'ignore', got {missing!r}")
        want = np.unique(as_ids(ids))
        with self._lock:
            slots, found = self._idmap.find(want)
            if missing == "error" and not found.all():
                absent = want[~found]
                raise InputError(f"remove(): {absent.size} id(s) not in the index, e.g. {absent[:5].tolist()}")
            if not found.any():
                return 0
            self._remove_rows(slots[found], want[found])
            return int(found.sum())

    def compact(self) -> None:
        """Reclaim space held by removed items (only tombstoning backends hold any)."""

    def _pads(self, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.int32 if self.metric == "hamming" else np.float32
        return np.full((nq, k), self.pad_distance, dtype=dtype), np.full((nq, k), PAD_ID, dtype=np.int64)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query as ``(distances, ids)``, each ``(nq, k)``, best first, padded with id -1."""
        q = self._coerce(queries, "queries")
        k = _check_k(k)
        with self._lock:
            self._require_trained("search")
            if q.shape[0] == 0 or self._idmap.n_alive == 0:
                return self._pads(q.shape[0], k)
            if self._idmap.n_dead == 0:
                dist, labels = self._knn_ordered(q, k)
                return dist, labels if self.labels_are_ids else self._idmap.translate(labels)
            return self._knn_skipping_dead(q, k)

    def _knn_ordered(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``_knn`` with the documented padding distance (faiss HNSW pads with int32 *min*) and with
        equal distances put in label (= insertion) order where the backend does not."""
        dist, labels = self._knn(q, k)
        dist[labels < 0] = self.pad_distance
        if self.sort_ties:
            order = np.lexsort((labels, dist), axis=-1)
            dist, labels = np.take_along_axis(dist, order, 1), np.take_along_axis(labels, order, 1)
        return dist, labels

    def _first_alive(self, dist: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keep the first ``k`` results of each row whose slot is alive; flag rows that may lack some."""
        ids = self._idmap.translate(labels)
        gone = ids < 0
        order = np.argsort(gone, axis=1, kind="stable")[:, :k]
        ids_k = np.take_along_axis(ids, order, 1)
        dist_k = np.take_along_axis(dist, order, 1)
        dist_k[ids_k < 0] = self.pad_distance
        # a row was cut short if it got fewer than k alive hits although the backend filled every place
        short = ((~gone).sum(axis=1) < k) & (labels[:, -1] >= 0)
        return dist_k, ids_k, short

    def _knn_skipping_dead(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over a backend still holding removed rows: over-fetch, drop dead, refetch short rows."""
        enough = k + self._idmap.n_dead  # certainly enough: every dead row could rank first
        first = min(enough, 2 * k + 16)
        dist, labels = self._knn_ordered(q, first)
        dist, ids, short = self._first_alive(dist, labels, k)
        if first < enough and short.any():
            rows = np.flatnonzero(short)
            d2, l2 = self._knn_ordered(np.ascontiguousarray(q[rows]), enough)
            dist[rows], ids[rows], _ = self._first_alive(d2, l2, k)
        return dist, ids

    def range_search(self, queries: Any, radius: Any) -> RangeResult:
        """All items within ``radius`` of each query (Hamming: distance <= radius, inclusive;
        inner product: similarity >= radius), sorted best first, ties in insertion order."""
        q = self._coerce(queries, "queries")
        r = self._check_radius(radius)
        nq = q.shape[0]
        with self._lock:
            self._require_trained("range_search")
            if nq == 0 or self._idmap.n_alive == 0:
                dtype = np.int32 if self.metric == "hamming" else np.float32
                return RangeResult(np.zeros(nq + 1, np.int64), np.empty(0, np.int64), np.empty(0, dtype))
            lims, dist, labels = self._range(q, r)
            ids = labels if self.labels_are_ids else self._idmap.translate(labels)
            has_dead = self._idmap.n_dead > 0
        qidx = np.repeat(np.arange(nq, dtype=np.int64), np.diff(lims).astype(np.int64))
        if has_dead:  # tombstoned rows translate to id -1
            keep = ids >= 0
            qidx, dist, labels, ids = qidx[keep], dist[keep], labels[keep], ids[keep]
        order = np.lexsort((labels, dist if self.metric == "hamming" else -dist, qidx))
        new_lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.bincount(qidx, minlength=nq), out=new_lims[1:])
        return RangeResult(new_lims, ids[order], dist[order])

    # ================================================================== persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to one checksummed file, atomically (see ``bitseek.index.persist``)."""
        from bitseek import __version__

        with self._lock:
            header = {
                "backend": self.backend,
                "spec": self.spec,
                "metric": self.metric,
                "dim": self.dim,
                "params": self.params,
                "options": self._options,
                "n_slots": self._idmap.n_slots,
                "n_alive": self._idmap.n_alive,
                "next_auto_id": self._idmap.next_auto_id,
                "bitseek_version": __version__,
            }
            sections = [("faiss", self._serialize()), ("ids", self._idmap.slot_ids.astype("<i8"))]
            write_index_file(path, header, sections)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Index":
        """Read an index file written by ``save``; damage or a wrong kind raises FileFormatError."""
        p = Path(path)
        header, sections = read_index_file(p)
        try:
            backend = str(header["backend"])
            dim = int(header["dim"])
            params = {str(k): int(v) for k, v in dict(header["params"]).items()}
            options = {str(k): int(v) for k, v in dict(header["options"]).items()}
            n_slots, n_alive = int(header["n_slots"]), int(header["n_alive"])
            next_auto_id = int(header["next_auto_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"{p}: corrupt index header ({type(e).__name__}: {e})") from None
        klass = Index._registry.get(backend)
        if klass is None:
            raise FileFormatError(f"{p}: unknown index backend {backend!r} (known: {', '.join(sorted(Index._registry))})")
        if not issubclass(klass, cls):
            raise FileFormatError(f"{p}: holds a {backend!r} index, not a {cls.__name__}")
        if set(sections) != {"faiss", "ids"}:
            raise FileFormatError(f"{p}: expected sections faiss and ids, found {sorted(sections)}")
        raw_ids = sections["ids"]
        if raw_ids.size != 8 * n_slots:
            raise FileFormatError(f"{p}: ids section holds {raw_ids.size} bytes for {n_slots} rows")
        try:
            obj = klass(dim, params, options)
            obj._restore_faiss(sections["faiss"])
            obj._idmap = IdMap.from_slot_ids(raw_ids.view("<i8").astype(np.int64), next_auto_id)
            if int(obj._faiss.ntotal) != n_slots:
                raise InputError(f"faiss index holds {obj._faiss.ntotal} rows, the id table {n_slots}")
            if obj._idmap.n_alive != n_alive:
                raise InputError(f"id table has {obj._idmap.n_alive} live ids, the header says {n_alive}")
            if obj._idmap.n_dead and not obj.tombstones:
                raise InputError(f"removed rows (id -1) in a {backend} index, which deletes rows")
            obj._apply_options()
        except (BitseekError, RuntimeError, ValueError, TypeError) as e:
            raise FileFormatError(f"{p}: inconsistent index file ({e})") from None
        return obj
