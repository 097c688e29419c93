"""Catalog storage: schema, per-thread connections, and the item state machine ``pending -> ready``.

Tables (schema version in ``PRAGMA user_version`` and in ``meta``):

* ``meta(key, value)``: JSON values describing the collection (frames per video, feature size,
  backbone, sampling, the model that encodes items, the schema version).
* ``items``: one row per video or image. ``id`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``, so an id
  is never reused, even after its item is deleted: an index that still holds a deleted id after a
  crash can never point at a different item. ``content_hash`` is unique: one row per content.
* ``features(id, frames)``: the sampled frames' features, float16 ``(n_frames, dim)`` bytes.
* ``thumbs(id, jpeg)``: a small JPEG per item.

An item is inserted ``pending`` (its id and hash claimed) and becomes ``ready`` in the single
transaction that also stores its features and thumbnail, so a ready row always has both.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.errors import BitseekError, FileFormatError

__all__ = ["SCHEMA_VERSION", "Catalog", "CatalogError", "Item"]

SCHEMA_VERSION = 1
KINDS = ("video", "image")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('video', 'image')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready')),
    duration REAL,
    frame_times TEXT,
    n_frames INTEGER,
    width INTEGER,
    height INTEGER,
    sampling TEXT,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_path ON items(path);
CREATE INDEX IF NOT EXISTS items_status ON items(status);
CREATE TABLE IF NOT EXISTS features (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    frames BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS thumbs (
    id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = ("id", "path", "size", "mtime_ns", "content_hash", "kind", "status", "duration", "frame_times",
            "n_frames", "width", "height", "sampling", "added")


class CatalogError(FileFormatError):
    """The catalog file is missing, damaged, of another schema version, or not a catalog."""


@dataclass(frozen=True)
class Item:
    """One catalog row (without the feature and thumbnail blobs)."""

    id: int
    path: str
    kind: str
    content_hash: str
    status: str
    size: int
    mtime_ns: int
    duration: float | None
    frame_times: list[float] = field(default_factory=list)
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    sampling: str | None = None
    added: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _item(row: sqlite3.Row | tuple[Any, ...]) -> Item:
    d = dict(zip(_COLUMNS, row))
    d["frame_times"] = json.loads(d["frame_times"]) if d["frame_times"] else []
    return Item(**d)


class Catalog:
    """A collection's catalog file, opened once per process; safe to use from many threads.

    Each thread gets its own ``sqlite3`` connection (connections must not cross threads); WAL lets
    readers run while one writer commits. Writes go through :meth:`transaction`.
    """

    def __init__(self, path: str | os.PathLike[str], create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise CatalogError(f"{self.path}: no catalog here")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        conn = self.conn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise CatalogError(f"{self.path}: not a readable SQLite catalog ({e})") from None
        if version > SCHEMA_VERSION:
            raise CatalogError(f"{self.path}: catalog schema version {version} is newer than this bitseek "
                               f"reads ({SCHEMA_VERSION}); upgrade bitseek")
        if not tables:
            if not create:
                raise CatalogError(f"{self.path}: an empty SQLite file, not a bitseek catalog")
            conn.executescript(_SCHEMA)
            self.set_meta({"schema_version": SCHEMA_VERSION, "created": time.time()})
        elif "items" not in tables or version < 1:
            raise CatalogError(f"{self.path}: an SQLite file without the catalog tables (not a bitseek catalog)")

    # ------------------------------------------------------------------ connections
    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            if self._closed:
                raise BitseekError(f"{self.path}: catalog is closed")
            try:
                c = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("PRAGMA synchronous=FULL")  # a committed row survives a crash of the process or the OS
                c.execute("PRAGMA foreign_keys=ON")
            except sqlite3.DatabaseError as e:
                raise CatalogError(f"{self.path}: cannot open the catalog ({e})") from None
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        """Close every thread's connection (call once no thread uses the catalog any more)."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.ProgrammingError:  # made in another, finished thread: sqlite refuses cross-thread close
                pass
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: ``BEGIN IMMEDIATE`` (takes the write lock up front) ... ``COMMIT``."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, values: dict[str, Any], conn: sqlite3.Connection | None = None) -> None:
        rows = [(k, json.dumps(v)) for k, v in values.items()]
        if conn is not None:
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
            return
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)

    # ------------------------------------------------------------------ item state machine
    def add_pending(self, path: str, size: int, mtime_ns: int, content_hash: str, kind: str) -> int:
        """Claim an id and the content hash for an item about to be decoded; returns the id."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO items(path, size, mtime_ns, content_hash, kind, status, added) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?)", (path, int(size), int(mtime_ns), content_hash, kind, time.time()))
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def mark_ready(self, item_id: int, frames: np.ndarray, frame_times: Sequence[float], duration: float | None,
                   thumbnail: bytes, width: int | None, height: int | None, sampling: str | None) -> None:
        """Store an item's features and thumbnail and make it ``ready``, all in one transaction."""
        f16 = np.ascontiguousarray(frames, dtype=np.float16)
        if f16.ndim != 2 or f16.shape[0] != len(frame_times):
            raise ValueError(f"frames {f16.shape} do not match {len(frame_times)} frame times")
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO features(id, frames) VALUES (?, ?)", (item_id, f16.tobytes()))
            c.execute("INSERT OR REPLACE INTO thumbs(id, jpeg) VALUES (?, ?)", (item_id, bytes(thumbnail)))
            cur = c.execute(
                "UPDATE items SET status='ready', duration=?, frame_times=?, n_frames=?, width=?, height=?, "
                "sampling=? WHERE id=? AND status='pending'",
                (None if duration is None else float(duration), json.dumps([round(float(t), 6) for t in frame_times]),
                 int(f16.shape[0]), width, height, sampling, item_id))
            if cur.rowcount != 1:
                raise CatalogError(f"{self.path}: item {item_id} is not pending (deleted by another process?)")

    def delete(self, ids: Iterable[int]) -> int:
        """Delete items (and, by cascade, their features and thumbnails); returns how many."""
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        with self.transaction() as c:
            n = 0
            for s in range(0, len(ids), 500):
                chunk = ids[s:s + 500]
                n += c.execute(f"DELETE FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
        return n

    def set_path(self, item_id: int, path: str, size: int, mtime_ns: int) -> None:
        """A known content found at a new path (the file was moved or renamed)."""
        with self.transaction() as c:
            c.execute("UPDATE items SET path=?, size=?, mtime_ns=? WHERE id=?", (path, int(size), int(mtime_ns), item_id))

    # ------------------------------------------------------------------ reads
    def ids(self, status: str = "ready") -> np.ndarray:
        rows = self.conn.execute("SELECT id FROM items WHERE status=? ORDER BY id", (status,)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count(self, status: str = "ready") -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM items WHERE status=?", (status,)).fetchone()[0])

    def get(self, item_id: int) -> Item | None:
        row = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM items WHERE id=?", (int(item_id),)).fetchone()
        return None if row is None else _item(row)

    def many(self, ids: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            q = f"SELECT {','.join(_COLUMNS)} FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            out.update((it.id, it) for it in map(_item, self.conn.execute(q, chunk)))
        return out

    def by_hash(self, content_hash: str) -> Item | None:
        row = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM items WHERE content_hash=?",
                                (content_hash,)).fetchone()
        return None if row is None else _item(row)

    def by_path(self, path: str) -> list[Item]:
        rows = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM items WHERE path=?", (path,)).fetchall()
        return [_item(r) for r in rows]

    def items(self, status: str = "ready") -> Iterator[Item]:
        q = f"SELECT {','.join(_COLUMNS)} FROM items WHERE status=? ORDER BY id"
        for row in self.conn.execute(q, (status,)).fetchall():
            yield _item(row)

    def frames(self, item_id: int, dim: int) -> np.ndarray:
        """An item's frame features as float32 ``(n_frames, dim)``."""
        row = self.conn.execute("SELECT frames FROM features WHERE id=?", (int(item_id),)).fetchone()
        if row is None:
            raise CatalogError(f"{self.path}: item {item_id} has no stored features")
        return _decode_frames(row[0], dim, self.path, item_id)

    def iter_frames(self, ids: Sequence[int], dim: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(id, frames float32)`` for each of ``ids`` that has features, in the order given."""
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 256):
            chunk = ids[s:s + 256]
            q = f"SELECT id, frames FROM features WHERE id IN ({','.join('?' * len(chunk))})"
            got = {int(i): b for i, b in self.conn.execute(q, chunk)}
            for i in chunk:
                if i in got:
                    yield i, _decode_frames(got[i], dim, self.path, i)

    def thumbnail(self, item_id: int) -> bytes | None:
        row = self.conn.execute("SELECT jpeg FROM thumbs WHERE id=?", (int(item_id),)).fetchone()
        return None if row is None else bytes(row[0])

    def nbytes(self) -> int:
        """Bytes on disk: the database file plus its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())


def _decode_frames(blob: bytes, dim: int, path: Path, item_id: int) -> np.ndarray:
    a = np.frombuffer(blob, dtype=np.float16)
    if dim <= 0 or a.size % dim:
        raise CatalogError(f"{path}: item {item_id}: stored features ({a.size} values) are not rows of {dim}")
    return a.reshape(-1, dim).astype(np.float32)
