"""Milvus behind the :class:`SearchIndex` API: the data lives in a Milvus collection, the file is a descriptor.

Two engines (the spec's metric decides how ``make_index`` sizes the index):

* ``milvus:uri=…,collection=…[,index=BIN_FLAT|BIN_IVF_FLAT,nlist=…,nprobe=…]`` — packed binary codes as
  ``BINARY_VECTOR`` with ``HAMMING``;
* ``milvus-ip:uri=…,collection=…[,index=FLAT|IVF_FLAT,nlist=…,nprobe=…]`` — float descriptors as
  ``FLOAT_VECTOR`` with ``IP``.

The collection has an ``INT64`` primary key ``id`` (our ids), the vector ``vec`` and a ``JSON`` field
``meta`` (the per-item metadata columns). Reads use ``Strong`` consistency by default: a search sees
every write made before it, deletes included, at the price of waiting for the cluster's next time tick
(about 200 ms per call). ``consistency=Session`` skips that wait and sees this client's inserts and
everything flushed (``save`` flushes), but Milvus 2.3.5 does not order a search after this client's
deletes (measured: a search right after ``remove`` still returned the removed ids). Tie rule: results are ordered by (distance, id) — ascending id among equal
distances, which is the exact faiss engines' insertion order whenever ids were added in ascending
order (as ``bitseek encode``/``merge`` write them). For ``BIN_FLAT`` a tie at the k-th place is
resolved the same way (the tied items are fetched by a range search and the smallest ids kept), so
top-k equals brute force; ``BIN_IVF_FLAT`` and float search sort what Milvus returns.

Limits of the server, refused with a clear error rather than answered wrongly: ``k`` and the hits of
one range-search query are capped at 16384 (Milvus's ``topk`` limit).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.api import (PAD_HAMMING, PAD_ID, PAD_SIMILARITY, IndexFileError, RangeResult, SearchIndex,
                               as_ids, check_k, to_numpy)

__all__ = ["MilvusIndex", "MilvusFloatIndex", "LocalMilvus", "local_server", "TOPK_LIMIT"]

TOPK_LIMIT = 16384  # Milvus's maximum limit (top-k and range-search hits per query)
_BATCH = 8192  # rows per insert/delete/query request (well under the 64 MB gRPC message cap)
_ALIASES = itertools.count()
_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord", "dataNode")


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise ConfigError("the Milvus engine needs pymilvus: pip install 'bitseek[milvus]'") from None
    return pymilvus


class MilvusIndex(SearchIndex):
    """Binary codes in a Milvus collection (``BINARY_VECTOR``, ``HAMMING``)."""

    engine: ClassVar[str] = "milvus"
    metric: ClassVar[str] = "hamming"
    exact: ClassVar[bool] = True  # BIN_FLAT; an IVF index reports exact=False per instance
    search_params: ClassVar[dict[str, int]] = {"nprobe": 1}
    options_spec: ClassVar[dict[str, Any]] = {"uri": "http://127.0.0.1:19530", "collection": "bitseek",
                                              "index": "BIN_FLAT", "nlist": (128, 1), "nprobe": (8, 1),
                                              "token": "", "db": "default", "consistency": "Strong",
                                              "timeout": (30, 1)}
    _INDEXES: ClassVar[tuple[str, ...]] = ("BIN_FLAT", "BIN_IVF_FLAT")
    _METRIC: ClassVar[str] = "HAMMING"

    def __init__(self, dim: int, params: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        if params and params.get("body"):
            raise ConfigError(f"{self.engine}: options come as name=value (uri=…, collection=…), got {params['body']!r}")
        opts = {k: (v[0] if isinstance(v, tuple) else v) for k, v in self.options_spec.items()}
        opts.update(options or {})
        self._opts = opts
        if self.metric == "hamming" and (int(dim) < 8 or int(dim) % 8):
            raise ConfigError(f"{self.engine}: codes must be a positive multiple of 8 bits, got {dim}")
        self.dim = int(dim)
        kind = str(opts["index"]).upper()
        if kind not in self._INDEXES:
            raise ConfigError(f"{self.engine}: index={opts['index']!r} is not one of {', '.join(self._INDEXES)}")
        self._kind = kind
        level = str(opts["consistency"]).capitalize()
        if level not in _LEVELS:
            raise ConfigError(f"{self.engine}: consistency={opts['consistency']!r} is not one of {', '.join(_LEVELS)}")
        self._consistency = level
        self.exact = kind in ("BIN_FLAT", "FLAT")  # type: ignore[misc]
        self._lock = threading.Lock()
        self._alias = f"bitseek-{os.getpid()}-{next(_ALIASES)}"
        pm = _pymilvus()
        kw: dict[str, Any] = {"uri": str(opts["uri"]), "db_name": str(opts["db"])}
        if opts["token"]:
            kw["token"] = str(opts["token"])
        try:
            pm.connections.connect(self._alias, timeout=int(opts["timeout"]), **kw)
        except Exception as e:  # the client raises its own exception types
            raise ConfigError(f"{self.engine}: cannot reach Milvus at {opts['uri']} ({type(e).__name__}: {e})") from None
        self._coll = self._open_collection(pm, str(opts["collection"]))

    # ------------------------------------------------------------------ collection
    def _vector_type(self, pm: Any) -> Any:
        return pm.DataType.BINARY_VECTOR

    def _open_collection(self, pm: Any, name: str) -> Any:
        if pm.utility.has_collection(name, using=self._alias):
            coll = pm.Collection(name, using=self._alias)
            fields = {f.name: f for f in coll.schema.fields}
            vec = fields.get("vec")
            if "id" not in fields or vec is None or vec.dtype != self._vector_type(pm) \
                    or int(vec.params.get("dim", -1)) != self.dim:
                raise ConfigError(f"{self.engine}: collection {name!r} exists with another schema (need id INT64, "
                                  f"vec {self._vector_type(pm).name} dim {self.dim}, meta JSON); use another collection=")
        else:
            schema = pm.CollectionSchema([
                pm.FieldSchema("id", pm.DataType.INT64, is_primary=True, auto_id=False),
                pm.FieldSchema("vec", self._vector_type(pm), dim=self.dim),
                pm.FieldSchema("meta", pm.DataType.JSON),
            ], description="bitseek codes" if self.metric == "hamming" else "bitseek descriptors")
            coll = pm.Collection(name, schema, using=self._alias, consistency_level=self._consistency)
            params = {"nlist": int(self._opts["nlist"])} if "IVF" in self._kind else {}
            coll.create_index("vec", {"index_type": self._kind, "metric_type": self._METRIC, "params": params})
        coll.load()
        return coll

    def close(self) -> None:
        """Release the connection (the collection stays on the server)."""
        with contextlib.suppress(Exception):
            _pymilvus().connections.disconnect(self._alias)

    def drop(self) -> None:
        """Delete the collection and its data on the server."""
        self._coll.drop()
        self.close()

    # ------------------------------------------------------------------ description
    @property
    def spec(self) -> str:
        o = self._opts
        parts = [f"uri={o['uri']}", f"collection={o['collection']}", f"index={self._kind}"]
        if "IVF" in self._kind:
            parts += [f"nlist={o['nlist']}", f"nprobe={o['nprobe']}"]
        if o["db"] != "default":
            parts.append(f"db={o['db']}")
        if self._consistency != "Strong":
            parts.append(f"consistency={self._consistency}")
        return f"{self.engine}:" + ",".join(parts)

    def __len__(self) -> int:
        rows = self._coll.query(expr="", output_fields=["count(*)"], consistency_level=self._consistency)
        return int(rows[0]["count(*)"])

    @property
    def ids(self) -> np.ndarray:
        """Every stored id, ascending (Milvus keeps no insertion order; ascending id is the tie rule)."""
        out: list[int] = []
        it = self._coll.query_iterator(batch_size=_BATCH, expr="id >= 0", output_fields=["id"],
                                       consistency_level=self._consistency)
        try:
            while True:
                page = it.next()
                if not page:
                    break
                out.extend(int(r["id"]) for r in page)
        finally:
            it.close()
        return np.sort(np.asarray(out, dtype=np.int64))

    def contains(self, ids: Any) -> np.ndarray:
        ids = as_ids(ids)
        present: set[int] = set()
        for s in range(0, len(ids), _BATCH):
            block = ids[s:s + _BATCH].tolist()
            rows = self._coll.query(expr=f"id in {block}", output_fields=["id"], consistency_level=self._consistency)
            present.update(int(r["id"]) for r in rows)
        return np.fromiter((int(i) in present for i in ids), dtype=bool, count=len(ids))

    # ------------------------------------------------------------------ writes
    def _rows(self, data: Any) -> list[Any]:
        x = to_numpy(data)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        want = self.dim // 8
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != want:
            raise InputError(f"{self.engine}: codes must be packed uint8 rows of {want} bytes ({self.dim} bits), "
                             f"got {x.dtype} {x.shape}")
        return [bytes(r) for r in np.ascontiguousarray(x)]

    def add(self, data: Any, ids: Any | None = None, meta: Mapping[str, list[Any]] | None = None) -> np.ndarray:
        rows = self._rows(data)
        n = len(rows)
        with self._lock:
            if ids is None:
                stored = self.ids
                start = int(stored.max()) + 1 if stored.size else 0
                ids = np.arange(start, start + n, dtype=np.int64)
            ids = as_ids(ids, n)
            if len(np.unique(ids)) != n:
                raise InputError(f"{self.engine}: add() got repeated ids")
            if n and self.contains(ids).any():
                dup = ids[self.contains(ids)][:5].tolist()
                raise InputError(f"{self.engine}: ids already in the collection: {dup}")
            cols = {k: list(v) for k, v in (meta or {}).items()}
            for k, v in cols.items():
                if len(v) != n:
                    raise InputError(f"{self.engine}: meta column {k!r} has {len(v)} values for {n} items")
            metas = [{k: cols[k][i] for k in cols} for i in range(n)]
            try:
                json.dumps(metas[:1])
            except (TypeError, ValueError) as e:
                raise InputError(f"{self.engine}: metadata must be JSON-serialisable ({e})") from None
            for s in range(0, n, _BATCH):
                self._coll.insert([ids[s:s + _BATCH].tolist(), rows[s:s + _BATCH], metas[s:s + _BATCH]])
        return ids

    def remove(self, ids: Any, missing: str = "error") -> int:
        if missing not in ("error", "ignore"):
            raise InputError(f"remove(): missing must be 'error' or 'ignore', got {missing!r}")
        ids = as_ids(ids)
        with self._lock:
            present = self.contains(ids)
            if missing == "error" and not present.all():
                raise InputError(f"{self.engine}: remove(): ids not in the collection: {ids[~present][:5].tolist()}")
            gone = np.unique(ids[present])
            for s in range(0, len(gone), _BATCH):
                self._coll.delete(expr=f"id in {gone[s:s + _BATCH].tolist()}")
        return int(len(gone))

    # ------------------------------------------------------------------ reads
    def _queries(self, queries: Any) -> list[Any]:
        return self._rows(queries)

    def _param(self, params: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        p = self.check_params(params)
        inner: dict[str, Any] = dict(extra)
        if "IVF" in self._kind:
            inner["nprobe"] = p.get("nprobe", int(self._opts["nprobe"]))
        return {"metric_type": self._METRIC, "params": inner}

    def _order(self, d: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.lexsort((i, d)) if self.metric == "hamming" else np.lexsort((i, -d))

    def _search_raw(self, q: list[Any], limit: int, param: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        res = self._coll.search(q, "vec", param, limit=limit, consistency_level=self._consistency)
        out = []
        for hits in res:
            ids = np.asarray(list(hits.ids), dtype=np.int64)
            dist = np.asarray(list(hits.distances), dtype=np.float64)
            if self.metric == "hamming":
                dist = np.rint(dist)
            order = self._order(dist, ids)
            out.append((dist[order], ids[order]))
        return out

    def search(self, queries: Any, k: int, **params: int) -> tuple[np.ndarray, np.ndarray]:
        k = check_k(k)
        if k > TOPK_LIMIT:
            raise InputError(f"{self.engine}: k={k} is above Milvus's limit of {TOPK_LIMIT}")
        q = self._queries(queries)
        param = self._param(params)
        hits = self._search_raw(q, k, param) if q else []
        if self._kind == "BIN_FLAT":
            hits = self._resolve_ties(q, hits, k)
        pad = PAD_HAMMING if self.metric == "hamming" else PAD_SIMILARITY
        dist = np.full((len(q), k), pad, dtype=np.int32 if self.metric == "hamming" else np.float32)
        ids = np.full((len(q), k), PAD_ID, dtype=np.int64)
        for r, (d, i) in enumerate(hits):
            m = min(k, len(i))
            dist[r, :m] = d[:m]
            ids[r, :m] = i[:m]
        return dist, ids

    def _resolve_ties(self, q: list[Any], hits: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[Any]:
        """At a full top-k, replace Milvus's pick among the k-th distance's ties by the smallest ids."""
        groups: dict[int, list[int]] = {}
        for r, (d, i) in enumerate(hits):
            if len(i) == k:
                groups.setdefault(int(d[-1]), []).append(r)
        out = list(hits)
        for dk, rows in groups.items():
            tied = self._search_raw([q[r] for r in rows], TOPK_LIMIT,
                                    {"metric_type": self._METRIC, "params": {"radius": dk + 1, "range_filter": dk}})
            for r, (_, ti) in zip(rows, tied):
                if len(ti) >= TOPK_LIMIT:
                    raise InputError(f"{self.engine}: more than {TOPK_LIMIT} items tie at distance {dk}; "
                                     "cannot order them exactly")
                d, i = hits[r]
                keep = d < dk
                fill = np.sort(ti)[: k - int(keep.sum())]
                out[r] = (np.concatenate([d[keep], np.full(len(fill), dk, dtype=d.dtype)]),
                          np.concatenate([i[keep], fill]))
        return out

    def _range_param(self, radius: Any) -> tuple[dict[str, Any], Any]:
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or int(radius) < 0:
            raise InputError(f"{self.engine}: radius must be a whole number of bits >= 0, got {radius!r}")
        r = int(radius)
        return {"radius": r + 1, "range_filter": 0}, r  # Milvus HAMMING range: range_filter <= d < radius

    def _keep(self, d: np.ndarray, r: Any) -> np.ndarray:
        return d <= r

    def range_search(self, queries: Any, radius: Any, **params: int) -> RangeResult:
        q = self._queries(queries)
        extra, r = self._range_param(radius)
        n = len(self)
        limit = max(1, min(n, TOPK_LIMIT))
        results = self._search_raw(q, limit, self._param(params, **extra)) if q and n else [
            (np.zeros(0), np.zeros(0, dtype=np.int64)) for _ in q]
        lims = np.zeros(len(q) + 1, dtype=np.int64)
        ds, is_ = [], []
        for j, (d, i) in enumerate(results):
            if len(i) >= TOPK_LIMIT:
                raise InputError(f"{self.engine}: a query has more than {TOPK_LIMIT} hits within radius {radius}; "
                                 "use a smaller radius or search(k=…)")
            keep = self._keep(d, r)
            ds.append(d[keep])
            is_.append(i[keep])
            lims[j + 1] = lims[j] + int(keep.sum())
        dtype = np.int32 if self.metric == "hamming" else np.float32
        dist = np.concatenate(ds).astype(dtype) if ds else np.zeros(0, dtype=dtype)
        ids = np.concatenate(is_) if is_ else np.zeros(0, dtype=np.int64)
        return RangeResult(lims, dist, ids)

    def metadata(self, ids: Any) -> dict[str, list[Any]]:
        ids = as_ids(ids)
        found: dict[int, dict[str, Any]] = {}
        for s in range(0, len(ids), _BATCH):
            rows = self._coll.query(expr=f"id in {ids[s:s + _BATCH].tolist()}", output_fields=["id", "meta"],
                                    consistency_level=self._consistency)
            found.update({int(r["id"]): (r.get("meta") or {}) for r in rows})
        cols = sorted({c for m in found.values() for c in m})
        return {c: [found.get(int(i), {}).get(c) for i in ids] for c in cols}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a descriptor (where the collection is, and its spec); the data stays on the server."""
        from bitseek.index.persist import write_index_file

        self._coll.flush()
        header = {"engine": self.engine, "spec": self.spec, "dim": self.dim, "count": len(self),
                  "options": {k: v for k, v in self._opts.items() if k != "token"}}
        write_index_file(path, header, [])

    @classmethod
    def _from_file(cls, path: Path, header: dict[str, Any], sections: dict[str, np.ndarray]) -> "MilvusIndex":
        opts = header.get("options")
        dim = header.get("dim")
        if not isinstance(opts, dict) or not isinstance(dim, int):
            raise IndexFileError(f"{path}: corrupt Milvus descriptor (no options/dim)")
        token = os.environ.get("BITSEEK_MILVUS_TOKEN", "")  # credentials are never written to the file
        return cls(dim, None, {**opts, "token": token})


class MilvusFloatIndex(MilvusIndex):
    """Float descriptors in a Milvus collection (``FLOAT_VECTOR``, ``IP``)."""

    engine: ClassVar[str] = "milvus-ip"
    metric: ClassVar[str] = "ip"
    options_spec: ClassVar[dict[str, Any]] = {**MilvusIndex.options_spec, "index": "FLAT"}
    _INDEXES: ClassVar[tuple[str, ...]] = ("FLAT", "IVF_FLAT")
    _METRIC: ClassVar[str] = "IP"

    def _vector_type(self, pm: Any) -> Any:
        return pm.DataType.FLOAT_VECTOR

    def _rows(self, data: Any) -> list[Any]:
        x = to_numpy(data)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim or not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"{self.engine}: descriptors must be float rows of {self.dim}, got {x.dtype} {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"{self.engine}: descriptors contain NaN or inf")
        return list(x)

    def _resolve_ties(self, q: list[Any], hits: list[Any], k: int) -> list[Any]:
        return hits

    def _range_param(self, radius: Any) -> tuple[dict[str, Any], Any]:
        try:
            r = float(radius)
        except (TypeError, ValueError):
            raise InputError(f"{self.engine}: radius must be a similarity threshold, got {radius!r}") from None
        # Milvus IP range: radius < score <= range_filter; ask a hair lower, then keep score >= r exactly
        below = float(np.nextafter(np.float32(r), np.float32(-np.inf)))
        return {"radius": below, "range_filter": 3.0e38}, r

    def _keep(self, d: np.ndarray, r: Any) -> np.ndarray:
        return d >= np.float32(r)


@dataclass(frozen=True)
class LocalMilvus:
    """A running embedded server: the client URI and the server's process id (for health checks)."""

    uri: str
    pid: int


@contextlib.contextmanager
def local_server(base_dir: str | os.PathLike[str], start_timeout_s: float = 180.0) -> Iterator[LocalMilvus]:
    """Run the embedded Milvus standalone server (PyPI ``milvus``) with every component on 127.0.0.1.

    Yields the URI and process id. Each component's advertised ``ip`` is set to 127.0.0.1 in the generated
    ``milvus.yaml`` (by default Milvus advertises the machine's first non-loopback address); ports are
    free ones found on 127.0.0.1. The server is stopped on exit, also when starting fails.
    """
    try:
        from milvus import MilvusServer, MilvusServerConfig
    except ImportError:
        raise ConfigError("the embedded Milvus server needs the milvus package: pip install 'bitseek[milvus]'") from None
    cfg = MilvusServerConfig()
    server = MilvusServer(cfg, wait_for_started=False)
    server.set_base_dir(str(base_dir))
    for comp in _COMPONENTS:
        cfg.set(f"{comp}.ip", "127.0.0.1")
    try:
        server.start()
        server.wait_started(timeout=int(start_timeout_s * 1000))
        yield LocalMilvus(f"http://127.0.0.1:{cfg.get('proxy_port')}", int(server.server_proc.pid))
    finally:
        server.stop()

