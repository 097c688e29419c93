"""The search-index interface every engine implements, and the engine table ``load`` dispatches on.

Nothing here imports faiss: an engine is any :class:`SearchIndex` subclass (the faiss ones live in
``bitseek.index.faiss``; a remote engine such as Milvus keeps its data server-side and saves only a
small descriptor). The shared rules, stated once so that every engine can be tested against them
(``tests/contracts/test_every_index.py``):

* ids are non-negative int64, unique within an index; ``-1`` (``PAD_ID``) means "no result".
* one result order everywhere, as faiss: ``search -> (distances, ids)`` of shape ``(nq, k)``;
  ``range_search -> RangeResult(lims, distances, ids)`` and ``result[i] -> (distances, ids)``.
* best first (Hamming: ascending distance; inner product: descending similarity); rows with fewer
  than ``k`` hits are padded with id -1 and ``PAD_HAMMING`` / ``PAD_SIMILARITY``.
* search-time parameters (``nprobe``, ``ef_search``, ``nflip``) are keyword arguments of the call,
  so concurrent searches never see each other's settings.
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bitseek._array import as_ids as _as_ids
from bitseek._array import as_numpy
from bitseek.errors import ConfigError, FileFormatError, InputError
from bitseek.registry import ENGINES as _REGISTRY

__all__ = [
    "SearchIndex",
    "RangeResult",
    "IndexNotTrainedError",
    "IndexFileError",
    "RWLock",
    "PAD_ID",
    "PAD_HAMMING",
    "PAD_SIMILARITY",
    "ENGINES",
    "register_engine",
    "engine_class",
    "engine_names",
    "load_index",
    "as_ids",
    "to_numpy",
    "check_k",
]

PAD_ID = -1
PAD_HAMMING = int(np.iinfo(np.int32).max)
PAD_SIMILARITY = float("-inf")


class IndexNotTrainedError(InputError):
    """A trained engine (IVF) was asked to add or search before ``train``."""


class IndexFileError(FileFormatError):
    """An index file is missing, damaged, crafted or of another kind; the message names the file."""


@dataclass(frozen=True)
class RangeResult:
    """Radius-search hits of ``nq`` queries in the faiss layout ``(lims, D, I)``.

    Query ``i`` owns ``distances[lims[i]:lims[i + 1]]`` and the matching ``ids``, best first, ties
    in insertion order. ``result[i]`` returns that ``(distances, ids)`` pair; iterating yields one
    pair per query.
    """

    lims: np.ndarray
    distances: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return int(self.lims.shape[0] - 1)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"query {i} out of range for {n} queries")
        i %= n
        a, b = int(self.lims[i]), int(self.lims[i + 1])
        return self.distances[a:b], self.ids[a:b]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def counts(self) -> np.ndarray:
        """Number of hits per query."""
        return np.diff(self.lims)

    def cap(self, k: int) -> "RangeResult":
        """The best ``k`` hits of each query (hits are sorted best first already)."""
        k = check_k(k, "cap()")
        counts = self.counts
        query = np.repeat(np.arange(len(self)), counts)
        keep = (np.arange(int(self.lims[-1])) - self.lims[:-1][query]) < k
        lims = np.zeros_like(self.lims)
        np.cumsum(np.minimum(counts, k), out=lims[1:])
        return RangeResult(lims, self.distances[keep], self.ids[keep])


to_numpy = as_numpy  # the one coercion (bitseek._array)


def as_ids(ids: Any, n: int | None = None, name: str = "ids") -> np.ndarray:
    """Validate ids: integers, 1-D (a scalar is one id), non-negative; returned as int64."""
    return _as_ids(ids, n, name, what="codes")


def check_k(k: Any, what: str = "search()") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise InputError(f"{what}: k must be a positive integer, got {k!r}")
    return int(k)


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers so writes are not starved.

    Searches take the read side (they run in parallel: faiss and numpy release the GIL), while
    add/remove/train take the write side, so a search never sees half of a change.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._writer_depth = 0
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:  # a writer may call read-side helpers
                self._writer_depth += 1
                reentrant = True
            else:
                reentrant = False
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                if reentrant:
                    self._writer_depth -= 1
                else:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                self._waiting_writers += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
                self._writer, self._writer_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._cond.notify_all()


class SearchIndex(ABC):
    """One search engine behind the common contract (module docstring).

    Subclasses set ``engine`` (the name files and specs use), ``metric`` and ``exact`` and implement
    the abstract methods; ``search_params`` names the keyword arguments ``search``/``range_search``
    accept, each ``name -> minimum value``.
    """

    engine: ClassVar[str] = ""
    metric: ClassVar[str] = "hamming"  # "hamming" (smaller is closer) or "ip" (larger is closer)
    exact: ClassVar[bool] = False  # top-k equals brute force, tie rule included
    search_params: ClassVar[dict[str, int]] = {}
    dim: int

    # ------------------------------------------------------------------ description
    @property
    @abstractmethod
    def spec(self) -> str:
        """Canonical factory string; ``make_index(index.spec, ...)`` builds an equivalent empty index."""

    @property
    @abstractmethod
    def ids(self) -> np.ndarray:
        """Ids of the stored items, in insertion order."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def contains(self, ids: Any) -> np.ndarray:
        """A boolean mask: which of ``ids`` are stored."""

    def __contains__(self, item: Any) -> bool:
        try:
            ids = as_ids(item)
        except InputError:
            return False
        return ids.size == 1 and bool(self.contains(ids)[0])

    @property
    def is_trained(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} dim={self.dim} n={len(self)}>"

    # ------------------------------------------------------------------ writes
    def train(self, data: Any) -> None:
        """Fit a trained engine (IVF coarse quantizer); a no-op for the others."""

    @abstractmethod
    def add(self, data: Any, ids: Any | None = None, meta: Mapping[str, list[Any]] | None = None) -> np.ndarray:
        """Add items (with optional per-item metadata columns); returns their ids.

        ``ids=None`` assigns ids above any id ever added. Adding a present id is an error.
        """

    @abstractmethod
    def remove(self, ids: Any, missing: str = "error") -> int:
        """Remove by id; ``missing="error"`` refuses (and removes nothing) if any id is absent."""

    def compact(self) -> None:
        """Reclaim space held by removed items (only engines that tombstone hold any)."""

    def add_codeset(self, codeset: Any) -> np.ndarray:
        """Add a :class:`bitseek.codes.CodeSet` (or the path of a saved one) with its ids and metadata."""
        from bitseek.codes import CodeSet

        if isinstance(codeset, (str, os.PathLike)):
            codeset = CodeSet.load(codeset)
        if not isinstance(codeset, CodeSet):
            raise InputError(f"add_codeset(): expected a CodeSet or a path, got {type(codeset).__name__}")
        if self.metric != "hamming":
            raise InputError(f"add_codeset(): a {self.engine} index holds float descriptors, not binary codes")
        if codeset.bits != self.dim:
            raise InputError(f"add_codeset(): code set has {codeset.bits}-bit codes, the index holds {self.dim}-bit")
        return self.add(codeset.codes, codeset.ids, meta=codeset.meta or None)

    # ------------------------------------------------------------------ reads
    @abstractmethod
    def search(self, queries: Any, k: int, **params: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query as ``(distances, ids)``, each ``(nq, k)``, best first, padded with id -1."""

    @abstractmethod
    def range_search(self, queries: Any, radius: Any, **params: int) -> RangeResult:
        """Every item within ``radius`` (Hamming: distance <= radius; inner product: similarity >=
        radius), best first, ties in insertion order."""

    def metadata(self, ids: Any) -> dict[str, list[Any]]:
        """Metadata columns for ``ids`` (``None`` where an item has none); ``{}`` if the index keeps none."""
        return {}

    def check_params(self, params: Mapping[str, Any]) -> dict[str, int]:
        """Validate per-call search parameters against ``search_params``."""
        out: dict[str, int] = {}
        for key, value in params.items():
            if value is None:
                continue
            if key not in self.search_params:
                valid = ", ".join(sorted(self.search_params)) or "none"
                raise ConfigError(f"a {self.engine} index has no search parameter {key!r} (valid: {valid})")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{self.engine} search parameter {key}: expected an integer, got {value!r}")
            if int(value) < self.search_params[key]:
                raise ConfigError(f"{self.engine} search parameter {key}: must be >= {self.search_params[key]}, got {value}")
            out[key] = int(value)
        return out

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index (or, for a remote engine, its descriptor) to one checksummed file."""

    @classmethod
    @abstractmethod
    def _from_file(cls, path: Path, header: dict[str, Any], sections: dict[str, np.ndarray]) -> "SearchIndex":
        """Rebuild from a verified file (``bitseek.index.persist``); raise IndexFileError if inconsistent."""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SearchIndex":
        """Load an index file; the engine named in it decides how (``SomeEngine.load`` also checks the kind)."""
        obj = load_index(path)
        if not isinstance(obj, cls):
            raise IndexFileError(f"{path}: holds a {obj.engine!r} index, not a {cls.__name__}")
        return obj


# ---------------------------------------------------------------------- engine table

# The engines live in the one registry (``bitseek list engines``). Built-ins are registered by
# "module:Class" strings so that listing engines or reading a file header imports no faiss; the
# class is imported when first used.
ENGINES = _REGISTRY

_BUILTIN: dict[str, tuple[str, str]] = {
    "flat": ("bitseek.index.faiss.binary:BinaryFlatIndex", "exact Hamming scan (faiss IndexBinaryFlat)"),
    "ivf": ("bitseek.index.faiss.ivf:BinaryIVFIndex", "inverted lists over k-means centroids, ivf<nlist>"),
    "multihash": ("bitseek.index.faiss.multihash:MultiHashIndex", "multi-index hashing, mih<nhash>; exact radius search"),
    "hnsw": ("bitseek.index.faiss.hnsw:BinaryHNSWIndex", "HNSW graph over Hamming codes, hnsw<M>"),
    "auto": ("bitseek.index.faiss.auto:AutoIndex", "picks flat or ivf+nprobe for a target recall on a held-out sample, auto[,target_recall=0.99]"),
    "float-ip": ("bitseek.index.faiss.float_ip:FloatIPIndex", "exact inner product over float descriptors"),
    "faiss": ("bitseek.index.faiss.factory:FaissFactoryIndex", "faiss:<binary factory string>, passed through"),
    "milvus": ("bitseek.index.milvus:MilvusIndex", "Milvus collection of binary codes (HAMMING), milvus:uri=…,collection=…"),
    "milvus-ip": ("bitseek.index.milvus:MilvusFloatIndex", "Milvus collection of float descriptors (IP)"),
}
_LOADED: dict[str, type[SearchIndex]] = {}


class _LazyEngine:
    """Registry entry for an engine class named by ``"module:Class"``; calling it builds an index."""

    def __init__(self, name: str, target: str, summary: str) -> None:
        self.name, self.target = name, target
        self.__doc__ = summary
        self.__module__ = target.partition(":")[0]

    def __call__(self, *args: Any, **kwargs: Any) -> SearchIndex:
        return engine_class(self.name)(*args, **kwargs)


def register_engine(name: str, target: str | type[SearchIndex], summary: str = "") -> None:
    """Add an engine (a class, or ``"module:Class"`` imported on first use) under ``name``."""
    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise ValueError(f"engine name {name!r} must be a non-empty lower-case word")
    _LOADED.pop(name, None)
    factory = target if isinstance(target, type) else _LazyEngine(name, target, summary)
    _REGISTRY.add(name, factory, replace=True)


def unregister_engine(name: str) -> None:
    _LOADED.pop(name, None)
    if name in _REGISTRY:
        _REGISTRY.unregister(name)


def engine_names() -> list[str]:
    return _REGISTRY.names()


def engine_class(name: str) -> type[SearchIndex]:
    """The engine class registered as ``name``; a built-in that fails to import is an error, not absent."""
    if name in _LOADED:
        return _LOADED[name]
    factory = _REGISTRY.get(name).factory  # unknown names: ConfigError with a suggestion
    if isinstance(factory, _LazyEngine):
        module, _, qual = factory.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    else:
        obj = factory
    if not (isinstance(obj, type) and issubclass(obj, SearchIndex)):
        raise TypeError(f"engine {name!r} is not a SearchIndex subclass")
    _LOADED[name] = obj
    return obj


for _name, (_target, _summary) in _BUILTIN.items():
    register_engine(_name, _target, _summary)


def load_index(path: str | os.PathLike[str], mmap: bool = False, verify: bool = True) -> SearchIndex:
    """Load any index file written by ``save``: the engine is read from the file's header.

    ``mmap=True`` (``flat``, ``ivf`` and ``auto`` files) searches straight from the file, read-only,
    with resident memory of about one scan block (flat) or about 64 MB of probed lists (ivf)
    (``bitseek.index.faiss.mapped``); ``verify=False`` then also skips the checksum pass over the file.
    """
    from bitseek.index.persist import read_index_file

    if mmap:
        from bitseek.index.faiss.mapped import open_mapped

        return open_mapped(path, verify=verify)
    p = Path(path)
    header, sections = read_index_file(p)
    name = header.get("engine", header.get("backend"))  # files before the engine split say "backend"
    if not isinstance(name, str):
        raise IndexFileError(f"{p}: corrupt index header (no engine name)")
    if name not in _REGISTRY:
        raise IndexFileError(f"{p}: unknown index engine {name!r} (known: {', '.join(engine_names())})")
    return engine_class(name)._from_file(p, header, sections)
