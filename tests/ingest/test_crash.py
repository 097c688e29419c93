"""``kill -9`` of real ``bitseek ingest`` processes at random points: nothing committed is lost, the
catalog and the index agree once the collection is opened, and a re-run completes the collection."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="video decoding needs PyAV (bitseek[collections])")

import bitseek  # noqa: E402
from bitseek.collection import Collection  # noqa: E402
from bitseek.media.samples import packaged_image, packaged_video  # noqa: E402

SRC_ROOT = str(Path(bitseek.__file__).resolve().parents[1])


def _sources(src: Path) -> int:
    """Real photos, crops of them and two clips; returns how many are valid media."""
    from PIL import Image

    src.mkdir()
    n = 0
    for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"):
        img = np.asarray(Image.open(packaged_image(name)).convert("RGB"))
        for c in range(6):
            h, w = img.shape[:2]
            y, x = (c * h) // 14, (c * w) // 14
            Image.fromarray(img[y:y + h // 2, x:x + w // 2]).save(src / f"{Path(name).stem}-{c}.jpg", quality=90)
            n += 1
    for clip in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(packaged_video(clip), src / clip)
        n += 1
    (src / "zz-broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return n


def _ready_ids(root: Path) -> set[int]:
    db = root / "catalog.sqlite"
    if not db.exists():
        return set()
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return {r[0] for r in c.execute("SELECT id FROM items WHERE status='ready'")}
        finally:
            c.close()
    except sqlite3.OperationalError:  # the catalog is being created
        return set()


def _start(src: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC_ROOT, "OMP_NUM_THREADS": "1", "BITSEEK_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "bitseek", "-q", "ingest", str(src), "--collection", str(root),
                             "--frames", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _check(root: Path, committed: set[int]) -> set[int]:
    with Collection.open(root) as col:
        ready = set(col.catalog.ids("ready").tolist())
        assert committed <= ready, f"committed items lost: {sorted(committed - ready)}"
        assert col.catalog.count("pending") == 0
        assert set(np.asarray(col.index.ids).tolist()) == ready
        for i in ready:  # every ready row is whole
            assert col.catalog.frames(i, col.dim).shape[0] >= 1 and col.thumbnail(i)
    return ready


@pytest.mark.slow
def test_kill_9_at_random_points(tmp_path):
    src, root = tmp_path / "src", tmp_path / "col"
    valid = _sources(src)
    rng = np.random.default_rng(1234)
    committed: set[int] = set()
    kills = 0
    # kill when at least `after` items are committed, plus a random delay (lands in decode, encode,
    # a catalog commit or an index save); the first kill is at a random moment of start-up.
    for after in (None, 3, 9, 16, 22):
        proc = _start(src, root)
        deadline = time.monotonic() + 120
        if after is None:
            time.sleep(float(rng.uniform(0.2, 2.0)))
        else:
            while len(_ready_ids(root)) < after and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(float(rng.uniform(0.0, 0.4)))
        snapshot = _ready_ids(root)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if (root / "catalog.sqlite").exists():
            committed = _check(root, committed | snapshot)
    assert kills >= 4

    proc = _start(src, root)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert "zz-broken.mp4" in err.decode()  # reported with its path, skipped
    ready = _check(root, committed)
    assert len(ready) == valid
    with Collection.open(root) as col:
        import h5py

        with h5py.File(root / "features.h5") as fh:
            assert sorted(fh["ids"][:].tolist()) == sorted(ready)
        for name in ("coffee-2.jpg", "bikes.mp4"):  # each file once, and it finds itself
            path = str((src / name).resolve())
            (item,) = [it for it in col.catalog.items() if it.path == path]
            hits = col.search_frames(col.catalog.frames(item.id, col.dim), k=1)
            assert hits[0].id == item.id
