"""What the faiss engines share: stable ids over faiss row positions, removal, padding, ties,
per-call search parameters, a readers-writer lock, and the one-file format.

Why a layer over faiss at all: faiss labels results by row position and positions move when rows are
removed; several faiss indexes can neither remove rows nor range-search; faiss files carry no
checksum and trust their own size fields. The price is one array lookup per returned result.

Concurrency: searches hold the read side of an :class:`~bitseek.index.api.RWLock` and pass their
parameters to faiss per call (``SearchParameters``), so any number of them run at once;
add/remove/train/set_options take the write side. The one exception is multi-hash k-NN with an
``nflip`` other than the index's own, which faiss can only take from the shared object (see
``multihash.py``).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bitseek.errors import BitseekError, ConfigError, InputError
from bitseek.index.api import (
    PAD_HAMMING,
    PAD_ID,
    IndexFileError,
    IndexNotTrainedError,
    RangeResult,
    RWLock,
    SearchIndex,
    as_ids,
    check_k,
)
from bitseek.index.faiss.validate import PayloadError, PayloadInfo
from bitseek.index.idmap import IdMap
from bitseek.index.meta import MetaStore
from bitseek.index.persist import write_index_file

__all__ = ["FaissIndex"]


class FaissIndex(SearchIndex):
    """One faiss index in ``self._faiss`` behind the common contract; engines implement the hooks."""

    labels_are_ids: ClassVar[bool] = False  # faiss stores our ids itself instead of row positions
    sort_ties: ClassVar[bool] = False  # engine returns equal distances in no useful order: sort them
    tombstones: ClassVar[bool] = False  # removed rows stay in faiss (slot id -1) until a rebuild
    name_patterns: ClassVar[tuple[str, ...]] = ()  # regexes for the spec's first token
    options_spec: ClassVar[dict[str, tuple[int, int]]] = {}  # option -> (default, minimum)
    pad_distance: ClassVar[float] = PAD_HAMMING

    def __init__(
        self,
        dim: int,
        params: Mapping[str, Any] | None = None,
        options: Mapping[str, int] | None = None,
        *,
        build: bool = True,
    ) -> None:
        self.dim = int(dim)
        self.params: dict[str, Any] = dict(params or {})
        self._options: dict[str, int] = {k: d for k, (d, _) in self.options_spec.items()}
        self._idmap = IdMap()
        self._meta = MetaStore()
        self._lock = RWLock()
        self._faiss: Any = None
        if build:
            self._build()
        self.set_options(**dict(options or {}))

    # ================================================================== hooks for engines
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
    def _knn(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k in label space (slots, or ids if ``labels_are_ids``), padded with label -1."""

    @abstractmethod
    def _range(self, q: np.ndarray, radius: Any, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inclusive radius hits as (lims, distances, labels), in any order within a query."""

    @abstractmethod
    def _serialize(self) -> np.ndarray:
        """The faiss index as bytes (uint8 array)."""

    @classmethod
    @abstractmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        """Check a payload before faiss parses it (``validate.py``); raise PayloadError."""

    @abstractmethod
    def _restore_faiss(self, buf: np.ndarray, info: PayloadInfo) -> None:
        """Deserialise a checked payload; raise InputError if it is not what this engine holds."""

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
        """Push ``self._options`` into the faiss object (the defaults a call without parameters uses)."""

    def _train(self, x: np.ndarray) -> None:
        """Engines without training ignore ``train``."""

    def _untrained_message(self) -> str:
        return f"{self.spec} index is not trained: call index.train(codes) first"

    # ================================================================== description
    @property
    def options(self) -> dict[str, int]:
        return dict(self._options)

    @property
    def spec(self) -> str:
        return ",".join([self._name(), *(f"{k}={v}" for k, v in sorted(self._options.items()))])

    @property
    def ids(self) -> np.ndarray:
        with self._lock.read():
            return self._idmap.alive_ids()

    def __len__(self) -> int:
        return self._idmap.n_alive

    def contains(self, ids: Any) -> np.ndarray:
        with self._lock.read():
            return self._idmap.contains(as_ids(ids))

    def metadata(self, ids: Any) -> dict[str, list[Any]]:
        with self._lock.read():
            return self._meta.lookup(ids)

    # ================================================================== writes
    def set_options(self, **options: int) -> None:
        """Change the index's default search options (e.g. ``nprobe``); unknown names are errors."""
        for key, value in options.items():
            if key not in self.options_spec:
                valid = ", ".join(sorted(self.options_spec)) or "none"
                raise ConfigError(f"{self.engine} index has no option {key!r} (valid: {valid})")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{self.engine} option {key}: expected an integer, got {value!r}")
            lo = self.options_spec[key][1]
            if int(value) < lo:
                raise ConfigError(f"{self.engine} option {key}: must be >= {lo}, got {value}")
        with self._lock.write():
            self._options.update({k: int(v) for k, v in options.items()})
            if self._faiss is not None:
                self._apply_options()

    def _require_trained(self, what: str) -> None:
        if not self.is_trained:
            raise IndexNotTrainedError(f"{what}(): {self._untrained_message()}")

    def train(self, codes: Any) -> None:
        x = self._coerce(codes, "training codes")
        with self._lock.write():
            self._train(x)

    def add(self, codes: Any, ids: Any | None = None, meta: Mapping[str, list[Any]] | None = None) -> np.ndarray:
        x = self._coerce(codes, "codes")
        columns = MetaStore.check(meta, x.shape[0])
        with self._lock.write():
            new = self._idmap.auto_ids(x.shape[0]) if ids is None else as_ids(ids, x.shape[0])
            self._require_trained("add")
            plan = self._idmap.check_new(new)
            if new.size:
                self._add_rows(x, new)
                self._idmap.append(plan)
                self._meta.add(new, columns)
            return new

    def remove(self, ids: Any, missing: str = "error") -> int:
        if missing not in ("error", "ignore"):
            raise InputError(f"remove(): missing must be 'error' or 'ignore', got {missing!r}")
        want = np.unique(as_ids(ids))
        with self._lock.write():
            slots, found = self._idmap.find(want)
            if missing == "error" and not found.all():
                absent = want[~found]
                raise InputError(f"remove(): {absent.size} id(s) not in the index, e.g. {absent[:5].tolist()}")
            if not found.any():
                return 0
            self._remove_rows(slots[found], want[found])
            self._meta.drop(want[found])
            return int(found.sum())

    # ================================================================== reads
    def _pads(self, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.int32 if self.metric == "hamming" else np.float32
        return np.full((nq, k), self.pad_distance, dtype=dtype), np.full((nq, k), PAD_ID, dtype=np.int64)

    def _call_options(self, params: Mapping[str, Any]) -> dict[str, int]:
        return {**self._options, **self.check_params(params)}

    def search(self, queries: Any, k: int, **params: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._coerce(queries, "queries")
        k = check_k(k)
        with self._lock.read():
            opts = self._call_options(params)
            self._require_trained("search")
            if q.shape[0] == 0 or self._idmap.n_alive == 0:
                return self._pads(q.shape[0], k)
            if self._idmap.n_dead == 0:
                dist, labels = self._knn_ordered(q, k, opts)
                return dist, labels if self.labels_are_ids else self._idmap.translate(labels)
            return self._knn_skipping_dead(q, k, opts)

    def _knn_ordered(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """``_knn`` with the documented padding distance (faiss HNSW pads with int32 *min*) and with
        equal distances put in label (= insertion) order where the engine does not."""
        dist, labels = self._knn(q, k, opts)
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
        # a row was cut short if it got fewer than k alive hits although the engine filled every place
        short = ((~gone).sum(axis=1) < k) & (labels[:, -1] >= 0)
        return dist_k, ids_k, short

    def _knn_skipping_dead(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over an engine still holding removed rows: over-fetch, drop dead, refetch short rows."""
        enough = k + self._idmap.n_dead  # certainly enough: every dead row could rank first
        first = min(enough, 2 * k + 16)
        dist, labels = self._knn_ordered(q, first, opts)
        dist, ids, short = self._first_alive(dist, labels, k)
        if first < enough and short.any():
            rows = np.flatnonzero(short)
            d2, l2 = self._knn_ordered(np.ascontiguousarray(q[rows]), enough, opts)
            dist[rows], ids[rows], _ = self._first_alive(d2, l2, k)
        return dist, ids

    def range_search(self, queries: Any, radius: Any, **params: int) -> RangeResult:
        q = self._coerce(queries, "queries")
        r = self._check_radius(radius)
        nq = q.shape[0]
        with self._lock.read():
            opts = self._call_options(params)
            self._require_trained("range_search")
            if nq == 0 or self._idmap.n_alive == 0:
                dtype = np.int32 if self.metric == "hamming" else np.float32
                return RangeResult(np.zeros(nq + 1, np.int64), np.empty(0, dtype), np.empty(0, np.int64))
            lims, dist, labels = self._range(q, r, opts)
            ids = labels if self.labels_are_ids else self._idmap.translate(labels)
        return self._range_result(nq, lims, dist, labels, ids)

    def _range_result(self, nq: int, lims: np.ndarray, dist: np.ndarray, labels: np.ndarray,
                      ids: np.ndarray) -> RangeResult:
        """Engine hits -> the documented order (distance, then label = insertion order), removed rows dropped."""
        qidx = np.repeat(np.arange(nq, dtype=np.int64), np.diff(lims).astype(np.int64))
        if (ids < 0).any():  # tombstoned rows translate to id -1
            keep = ids >= 0
            qidx, dist, labels, ids = qidx[keep], dist[keep], labels[keep], ids[keep]
        order = np.lexsort((labels, dist if self.metric == "hamming" else -dist, qidx))
        new_lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.bincount(qidx, minlength=nq), out=new_lims[1:])
        return RangeResult(new_lims, dist[order], ids[order])

    # ================================================================== persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to one checksummed file, atomically (layout in ``bitseek.index.persist``)."""
        with self._lock.read():
            header, sections = self._file_parts()
            write_index_file(path, header, sections)

    def _file_parts(self) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
        """Header and sections of the index file (``save``; a wrapping engine adds its own fields).
        The caller holds the read lock."""
        from bitseek import __version__

        header = {
            "engine": self.engine,
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
        if self._meta:
            sections.append(("meta", np.frombuffer(self._meta.to_bytes(), dtype=np.uint8)))
        return header, sections

    def _check_labels(self, info: PayloadInfo) -> None:
        """Labels stored inside the payload (IVF lists) must be the ones results are translated from."""
        labels = info.fields.get("list_ids")
        if labels is None:
            return
        want = self._idmap.alive_ids() if self.labels_are_ids else np.arange(self._idmap.n_slots, dtype=np.int64)
        if not np.array_equal(np.sort(labels), np.sort(want)):
            raise InputError("the labels in the faiss inverted lists do not match the id table")

    @classmethod
    def _header_params(cls, params: dict[str, Any], info: PayloadInfo) -> dict[str, Any]:
        """Structural parameters from the header, checked against the payload (before any build)."""
        return {str(k): int(v) for k, v in params.items()}

    @classmethod
    def _from_file(cls, path: Path, header: dict[str, Any], sections: dict[str, np.ndarray]) -> "FaissIndex":
        p = path
        try:
            dim = int(header["dim"])
            raw_params = dict(header["params"])
            options = {str(k): int(v) for k, v in dict(header["options"]).items()}
            n_slots, n_alive = int(header["n_slots"]), int(header["n_alive"])
            next_auto_id = int(header["next_auto_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFileError(f"{p}: corrupt index header ({type(e).__name__}: {e})") from None
        if not {"faiss", "ids"} <= set(sections) <= {"faiss", "ids", "meta"}:
            raise IndexFileError(f"{p}: expected sections faiss, ids (and meta), found {sorted(sections)}")
        raw_ids = sections["ids"]
        if n_slots < 0 or raw_ids.size != 8 * n_slots:
            raise IndexFileError(f"{p}: ids section holds {raw_ids.size} bytes for {n_slots} rows")
        try:
            info = cls._inspect(sections["faiss"])  # every size checked before faiss allocates
            if info.ntotal != n_slots:
                raise InputError(f"faiss index holds {info.ntotal} rows, the id table {n_slots}")
            if info.d != dim:
                raise InputError(f"payload holds {info.d}-dimensional data, the header says {dim}")
            params = cls._header_params(raw_params, info)
            obj = cls(dim, params, options, build=False)
            obj._restore_faiss(sections["faiss"], info)
            obj._idmap = IdMap.from_slot_ids(raw_ids.view("<i8").astype(np.int64), next_auto_id)
            if int(obj._faiss.ntotal) != n_slots:
                raise InputError(f"faiss index holds {obj._faiss.ntotal} rows, the id table {n_slots}")
            if obj._idmap.n_alive != n_alive:
                raise InputError(f"id table has {obj._idmap.n_alive} live ids, the header says {n_alive}")
            if obj._idmap.n_dead and not obj.tombstones:
                raise InputError(f"removed rows (id -1) in a {cls.engine} index, which deletes rows")
            obj._check_labels(info)
            if "meta" in sections:
                obj._meta = MetaStore.from_bytes(sections["meta"].tobytes())
            obj._apply_options()
        except PayloadError as e:
            raise IndexFileError(f"{p}: damaged or crafted faiss payload ({e})") from None
        except MemoryError:  # a size the walker could not bound; never a raw std::bad_alloc
            raise IndexFileError(f"{p}: the faiss payload asks for more memory than this machine has") from None
        except (BitseekError, RuntimeError, ValueError, TypeError, OverflowError) as e:
            raise IndexFileError(f"{p}: inconsistent index file ({e})") from None
        return obj
