"""The catalog: schema, the pending -> ready state machine, ids never reused, per-thread connections."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from bitseek.catalog import SCHEMA_VERSION, Catalog, CatalogError


def _ready(cat: Catalog, name: str, n: int = 3, dim: int = 8) -> int:
    i = cat.add_pending(f"/x/{name}", 10, 20, f"hash-{name}", "video")
    cat.mark_ready(i, np.full((n, dim), 0.5, np.float32), [0.5 * t for t in range(n)], 1.5, b"\xff\xd8jpeg", 4, 3,
                   "uniform")
    return i


def test_create_is_wal_and_versioned(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert cat.get_meta("schema_version") == SCHEMA_VERSION
    cat.set_meta({"frames": 16, "model": {"kind": "float"}})
    cat.close()
    again = Catalog(tmp_path / "c.sqlite")
    assert again.get_meta("model") == {"kind": "float"} and again.get_meta("frames") == 16


def test_pending_then_ready_round_trip(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    i = cat.add_pending("/x/a.mp4", 10, 20, "h1", "video")
    assert cat.count("pending") == 1 and cat.count("ready") == 0
    assert cat.get(i).status == "pending"
    feats = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    cat.mark_ready(i, feats, [0.0, 1.0, 2.0, 3.0], 4.0, b"jpg", 64, 48, "uniform")
    it = cat.get(i)
    assert it.status == "ready" and it.frame_times == [0.0, 1.0, 2.0, 3.0] and it.n_frames == 4
    assert it.duration == 4.0 and it.kind == "video" and it.content_hash == "h1"
    np.testing.assert_allclose(cat.frames(i, 8), feats, atol=2e-3)  # stored as float16
    assert cat.thumbnail(i) == b"jpg"
    assert list(cat.ids("ready")) == [i]
    with pytest.raises(CatalogError, match="not pending"):  # ready twice is refused
        cat.mark_ready(i, feats, [0.0] * 4, 4.0, b"jpg", 1, 1, None)


def test_hash_unique_and_ids_never_reused(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    a = _ready(cat, "a")
    with pytest.raises(sqlite3.IntegrityError):
        cat.add_pending("/x/other", 1, 1, "hash-a", "image")
    b = _ready(cat, "b")
    assert cat.delete([b]) == 1
    assert cat.thumbnail(b) is None  # cascade
    c = _ready(cat, "c")
    assert c > b > a  # a deleted id is never handed out again


def test_wrong_files_are_refused(tmp_path):
    with pytest.raises(CatalogError, match="no catalog here"):
        Catalog(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CatalogError, match="junk.sqlite"):
        Catalog(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t(x)")
    with pytest.raises(CatalogError, match="not a bitseek catalog"):
        Catalog(other)
    newer = tmp_path / "newer.sqlite"
    Catalog(newer, create=True).close()
    c = sqlite3.connect(newer)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(CatalogError, match="newer than this bitseek"):
        Catalog(newer)


def test_one_connection_per_thread(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    ids = [_ready(cat, f"i{n}") for n in range(5)]
    seen, errors = [], []

    def reader() -> None:
        try:
            seen.append(id(cat.conn))
            for _ in range(20):
                assert sorted(cat.many(ids)) == ids
                assert cat.frames(ids[0], 8).shape == (3, 8)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(seen)) == 4 and id(cat.conn) not in seen
    cat.close()
