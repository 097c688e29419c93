"""A collection folder: catalog (the truth) + index and SSVH features (derived); search by example.

Layout of ``DIR``::

    catalog.sqlite           items, frame features, thumbnails, settings (bitseek.catalog)
    index-<model>.bsi        the search index of the current model, ids = catalog ids
    features.h5              SSVH frame features of every ready item (bitseek.ingest.features)
    models/<fingerprint>/    the model that encodes items, when it is not plain float features
    lock                     held (flock) by the one process that writes: ingest, or a repairing open

**Write order (crash safety).** For each new file: (1) a ``pending`` catalog row claims the id and
content hash (commit); (2) decode and extract features; (3) one transaction stores the features and
thumbnail and sets the row ``ready``; (4) the item is added to the in-memory index, which is saved
atomically every few seconds and at the end. A deletion commits in the catalog first, then leaves
the index. The catalog is therefore always ahead of (or equal to) the index file, and
:meth:`Collection.open` reconciles them: pending rows of a dead writer are deleted (their files are
ingested again by the next run), index ids without a ready row are removed, and ready rows missing
from the index are encoded from their stored features and added. A ``kill -9`` at any moment thus
loses at most the files in flight, never a committed item, and never leaves the two disagreeing
once opened. Every file is replaced atomically (``bitseek.atomic``), so no file is ever half-written.

**Video-to-video scoring.** A video is ``N`` frames sampled by ``bitseek.media.sample_video`` (the
collection's ``--frames`` and ``--sampling``), each encoded by the frame extractor into an
L2-normalised feature ``f_t``; an image is a one-frame video, and a query is sampled and encoded
the same way. Search has two stages:

1. the index: an item's vector is ``L2(mean_t f_t)`` (float collections: exact cosine, ``float-ip``)
   or the model's code of its ``(N, dim)`` frame rows (Hamming, ``flat``). Top-k keeps a shortlist
   of ``max(4k, 64)``; ``radius`` keeps every item within it, in the index's own terms (cosine >=
   radius, or Hamming distance <= radius);
2. the frames: each candidate gets ``score = mean_i max_j <q_i, f_j>`` (Chamfer similarity: every
   query frame's best-matching stored frame, averaged), which is what a near-duplicate or a clip of
   a longer video shares with its source even when the mean vectors of busy videos look alike.
   Float collections are ordered by ``score``; code collections by Hamming ``distance``, ``score``
   breaking its many ties. The hit's ``time`` is the stored frame ``j`` maximising ``max_i <q_i, f_j>``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.catalog import Catalog, CatalogError
from bitseek.errors import BitseekError, ConfigError, InputError
from bitseek.ingest.models import ItemModel, pad_frames

__all__ = ["Collection", "Hit", "ItemNotFound", "CollectionBusy", "CATALOG_FILE"]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
LOCK_FILE = "lock"
DEFAULT_FRAMES = 16
DEFAULT_BACKBONE = "efficientnet_lite0"
SAMPLINGS = ("uniform", "shots")
_REFRESH_SECONDS = 2.0
WRITER_WAIT_S = 10.0  # a writer waits this long for a reader that is repairing the collection on open
SHORTLIST_FACTOR = 4  # the first stage keeps max(4k, 64) candidates for the frame-level re-score
SHORTLIST_MIN = 64
DECODE_SHORT_SIDE = 256  # videos are decoded scaled to this short side (the extractor resizes to 224 anyway)


class ItemNotFound(InputError):
    """No ready item has this id."""


class CollectionBusy(BitseekError):
    """Another process holds the collection's write lock (an ingest is running)."""


@dataclass(frozen=True)
class Hit:
    """One search result. ``distance`` (Hamming, codes) or ``score`` (cosine, float features) is set;
    ``time`` is the best-matching frame's time in seconds (None for an image)."""

    id: int
    path: str
    kind: str
    distance: float | None
    score: float | None
    time: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _WriteLock:
    """An exclusive ``flock`` on ``DIR/lock``: released by the kernel when its holder dies, even by ``kill -9``."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        """Take the lock, retrying for up to ``wait_s`` seconds (a repairing reader holds it briefly)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class Collection:
    """A collection opened for search (and, by ``bitseek.ingest``, for writing).

    Searches are thread-safe and run in parallel: the index takes its shared read lock, and the
    catalog gives each thread its own SQLite connection.
    """

    def __init__(self, root: Path, catalog: Catalog, lock: _WriteLock) -> None:
        self.root = root
        self.catalog = catalog
        self._lock = lock
        meta = catalog.meta()
        try:
            self.frames = int(meta["frames"])
            self.dim = int(meta["dim"])
            self.backbone = str(meta["backbone"])
            self.sampling = str(meta["sampling"])
            self.model_desc = dict(meta["model"])
        except (KeyError, TypeError, ValueError) as e:
            raise CatalogError(f"{catalog.path}: catalog settings are incomplete ({e}); not a finished collection") from None
        self.model = ItemModel.load(root, self.model_desc)
        self.index: Any = None
        self._index_stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._encoder: Any = None
        self._enc_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.dirty = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, write: bool = False) -> "Collection":
        """Open and reconcile a collection; ``write=True`` holds the write lock until :meth:`close`."""
        root = Path(os.path.expanduser(str(directory)))
        if not (root / CATALOG_FILE).is_file():
            raise BitseekError(f"--collection {directory}: not a collection (no {CATALOG_FILE}); "
                               f"create one with: bitseek ingest SRC --collection {directory}")
        lock = _WriteLock(root)
        got = lock.acquire(WRITER_WAIT_S if write else 0.0)
        if write and not got:
            raise CollectionBusy(f"--collection {directory}: another process (pid {lock.holder()}) is writing "
                                 "to it; wait for that ingest to finish")
        try:
            col = cls(root, Catalog(root / CATALOG_FILE), lock)
            col.reconcile()
        except BaseException:
            lock.release()
            raise
        if not write:
            lock.release()  # a reader repairs once, then lets an ingest in
        return col

    @classmethod
    def create(cls, directory: str | os.PathLike[str], *, frames: int | None = None, sampling: str | None = None,
               backbone: str | None = None, dim: int | None = None) -> "Collection":
        """Open for writing, creating the folder and catalog if needed; settings must match an existing one."""
        root = Path(os.path.expanduser(str(directory)))
        if root.exists() and not root.is_dir():
            raise InputError(f"--collection {directory}: is a file, not a folder")
        if (root / CATALOG_FILE).is_file():
            col = cls.open(root, write=True)
            for flag, want, have in (("--frames", frames, col.frames), ("--sampling", sampling, col.sampling),
                                     ("--backbone", backbone, col.backbone)):
                if want is not None and want != have:
                    col.close()
                    raise ConfigError(f"{flag} {want}: the collection {directory} was built with {flag} {have}; "
                                      f"use {have} (every item of a collection has the same layout) or a new folder")
            return col
        if root.exists() and any(p.name not in (LOCK_FILE,) for p in root.iterdir()):
            raise InputError(f"--collection {directory}: the folder exists and is not a collection; give an empty or "
                             "new folder")
        root.mkdir(parents=True, exist_ok=True)
        lock = _WriteLock(root)
        if not lock.acquire(WRITER_WAIT_S):
            raise CollectionBusy(f"--collection {directory}: another process (pid {lock.holder()}) is creating it")
        try:
            frames = DEFAULT_FRAMES if frames is None else int(frames)
            sampling = sampling or "uniform"
            backbone = backbone or DEFAULT_BACKBONE
            enc = None
            if dim is None:
                enc = _frame_encoder(backbone)
                dim = int(enc.dim)
            model = ItemModel.float_model(dim, backbone)
            tmp = root / f".{CATALOG_FILE}.creating"
            for p in root.glob(f".{CATALOG_FILE}.creating*"):
                p.unlink()
            cat = Catalog(tmp, create=True)
            cat.set_meta({"frames": frames, "dim": dim, "backbone": backbone, "sampling": sampling,
                          "model": model.desc})
            cat.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cat.conn.execute("PRAGMA journal_mode=DELETE")
            cat.close()
            os.replace(tmp, root / CATALOG_FILE)  # a catalog exists complete with its settings, or not at all
            col = cls(root, Catalog(root / CATALOG_FILE), lock)
            col._encoder = enc
            col.reconcile()
        except BaseException:
            lock.release()
            raise
        return col

    def close(self) -> None:
        self.catalog.close()
        self._lock.release()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.catalog.count("ready")

    # ------------------------------------------------------------------ index file and reconcile
    @property
    def index_path(self) -> Path:
        return self.root / f"index-{self.model.fingerprint}.bsi"

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _load_index(self) -> Any:
        from bitseek.index import load_index
        from bitseek.index.api import IndexFileError

        stamp = self._stamp()
        if stamp is None:
            return self.model.make_index(), None
        try:
            index = load_index(self.index_path)
        except IndexFileError as e:
            log.warning("%s; rebuilding it from the catalog", e)
            return self.model.make_index(), None
        return index, stamp

    def reconcile(self) -> dict[str, int]:
        """Make the index agree with the catalog's ready rows (see the module docstring); returns counts."""
        counts = {"pending_dropped": 0, "index_removed": 0, "index_added": 0}
        writer = self._lock.held
        if writer:
            pending = self.catalog.ids("pending")
            counts["pending_dropped"] = self.catalog.delete(pending.tolist())
            self._sweep()
        index, stamp = self._load_index()
        ready = self.catalog.ids("ready")
        have = np.asarray(index.ids, dtype=np.int64)
        extra = np.setdiff1d(have, ready)
        if extra.size:
            counts["index_removed"] = int(index.remove(extra, missing="ignore"))
        missing = np.setdiff1d(ready, have)
        if missing.size:
            self._encode_into(index, missing)
            counts["index_added"] = int(missing.size)
        self.index, self._index_stamp, self._checked = index, stamp, time.monotonic()
        changed = bool(extra.size or missing.size or stamp is None)
        if writer:
            if changed:
                self.save_index()
            self._check_export()
        if counts["pending_dropped"] or extra.size or missing.size:
            log.info("%s: reconciled: %d interrupted item(s) dropped, %d stale index row(s) removed, %d added",
                     self.root, counts["pending_dropped"], counts["index_removed"], counts["index_added"])
        return counts

    def _sweep(self) -> None:
        """Remove what a dead writer left: other models' index files, half-copied model folders."""
        from bitseek.atomic import sweep_stale_temporaries

        sweep_stale_temporaries(self.root)
        for p in self.root.glob("index-*.bsi"):
            if p != self.index_path:
                p.unlink()
        models = self.root / "models"
        if models.is_dir():
            for p in models.iterdir():
                if p.name.startswith(".tmp-") or (p.is_dir() and f"models/{p.name}" != self.model_desc.get("dir")):
                    shutil.rmtree(p, ignore_errors=True)

    def _check_export(self) -> None:
        from bitseek.ingest.features import FEATURES_FILE, exported_ids

        path = self.root / FEATURES_FILE
        ready = self.catalog.ids("ready")
        got = exported_ids(path)
        if got is None and ready.size == 0:
            return
        if got is None or not np.array_equal(np.sort(got), ready):
            self.export_features()

    def export_features(self) -> int:
        from bitseek.ingest.features import FEATURES_FILE, export_features

        return export_features(self.catalog, self.root / FEATURES_FILE, self.frames, self.dim)

    def _encode_into(self, index: Any, ids: np.ndarray, block: int = 256) -> None:
        """Encode ready items from their stored features and add them to ``index``."""
        ids = np.asarray(ids, dtype=np.int64)
        for s in range(0, ids.size, block):
            chunk = ids[s:s + block].tolist()
            got = list(self.catalog.iter_frames(chunk, self.dim))
            if not got:
                continue
            rows = np.stack([pad_frames(f, self.frames) for _, f in got])
            index.add(self.model.encode(rows), np.asarray([i for i, _ in got], dtype=np.int64))

    def save_index(self) -> None:
        self.index.save(self.index_path)
        self._index_stamp = self._stamp()
        self.dirty = False

    def refresh(self) -> bool:
        """Reload the index if another process saved a newer one (a search service beside an ingest)."""
        if self._lock.held:
            return False
        with self._refresh_lock:
            now = time.monotonic()
            if now - self._checked < _REFRESH_SECONDS:
                return False
            self._checked = now
            if self._stamp() == self._index_stamp:
                return False
            meta_model = self.catalog.get_meta("model")
            if meta_model != self.model_desc:
                self.model_desc = dict(meta_model)
                self.model = ItemModel.load(self.root, self.model_desc)
            index, stamp = self._load_index()
            ready = self.catalog.ids("ready")
            extra = np.setdiff1d(np.asarray(index.ids, dtype=np.int64), ready)
            if extra.size:
                index.remove(extra, missing="ignore")
            missing = np.setdiff1d(ready, np.asarray(index.ids, dtype=np.int64))
            if missing.size:
                self._encode_into(index, missing)
            self.index, self._index_stamp = index, stamp
            return True

    # ------------------------------------------------------------------ writes (ingest)
    def add_ready(self, ids: list[int], rows: np.ndarray) -> None:
        """Index items that are already ``ready`` in the catalog (``rows``: padded frames)."""
        if ids:
            self.index.add(self.model.encode(rows), np.asarray(ids, dtype=np.int64))
            self.dirty = True

    def remove(self, ids: list[int]) -> int:
        """Delete items: catalog first (the truth), then the index."""
        n = self.catalog.delete(ids)
        if ids:
            self.index.remove(np.asarray(ids, dtype=np.int64), missing="ignore")
            self.dirty = True
        return n

    def switch_model(self, model: ItemModel) -> None:
        """Re-encode every item with ``model``, save its index, then make it the collection's model."""
        old_path = self.index_path
        old = self.model
        self.model = model
        index = model.make_index()
        try:
            self._encode_into(index, self.catalog.ids("ready"))
            self.index = index
            self.save_index()
        except BaseException:
            self.model = old
            raise
        self.catalog.set_meta({"model": model.desc})  # the switch happens here, atomically
        self.model_desc = dict(model.desc)
        if old_path != self.index_path and old_path.exists():
            old_path.unlink()
        self._sweep()

    def frame_encoder(self) -> Any:
        with self._enc_lock:
            if self._encoder is None:
                self._encoder = _frame_encoder(self.backbone)
            return self._encoder

    # ------------------------------------------------------------------ reads
    def item(self, item_id: int) -> dict[str, Any]:
        it = self.catalog.get(_check_id(item_id))
        if it is None or it.status != "ready":
            raise ItemNotFound(f"no item with id {item_id} in {self.root}")
        return it.to_dict()

    def thumbnail(self, item_id: int) -> bytes:
        self.item(item_id)
        jpeg = self.catalog.thumbnail(int(item_id))
        if jpeg is None:
            raise ItemNotFound(f"item {item_id} has no thumbnail")
        return jpeg

    def image_frames(self, img: Any) -> np.ndarray:
        """Features ``(1, dim)`` of an image: a path, a PIL image, or an RGB uint8 ``(H, W, 3)`` array."""
        if isinstance(img, (str, os.PathLike)):
            from bitseek.media import read_image

            pixels = read_image(img)
        elif isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise InputError(f"search_image(): an array must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
            pixels = img
        else:
            from PIL import Image

            from bitseek.media import to_rgb_array

            if not isinstance(img, Image.Image):
                raise InputError(f"search_image(): expected a path, a PIL image or an RGB array, got {type(img).__name__}")
            pixels = to_rgb_array(img, "query image")
        return self.frame_encoder().encode(pixels[None])

    def video_frames(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Features ``(n, dim)`` of a query video, sampled as the collection's videos were."""
        from bitseek.media import sample_video

        frames, _times, _dur = sample_video(path, self.frames, mode=self.sampling, short_side=DECODE_SHORT_SIDE)
        return self.frame_encoder().encode(frames)

    def search_image(self, img: Any, k: int = 10, radius: float | None = None) -> list[Hit]:
        return self.search_frames(self.image_frames(img), k, radius)

    def search_video(self, path: str | os.PathLike[str], k: int = 10, radius: float | None = None) -> list[Hit]:
        return self.search_frames(self.video_frames(path), k, radius)

    def search_id(self, item_id: int, k: int = 10, radius: float | None = None) -> list[Hit]:
        """Items like item ``item_id`` (the item itself is left out of its own results)."""
        self.item(item_id)
        return self.search_frames(self.catalog.frames(int(item_id), self.dim), k, radius, exclude=int(item_id))

    def search_frames(self, qframes: np.ndarray, k: int = 10, radius: float | None = None,
                      exclude: int | None = None) -> list[Hit]:
        """Rank the collection against a query's frame features ``(n, dim)`` (two stages, module docstring)."""
        from bitseek.index.api import check_k

        k = check_k(k, "search")
        qframes = np.asarray(qframes, dtype=np.float32)
        if qframes.ndim != 2 or qframes.shape[1] != self.dim or qframes.shape[0] < 1:
            raise InputError(f"query features must be (n, {self.dim}), got {qframes.shape}")
        self.refresh()
        index = self.index
        hamming = self.model.metric == "hamming"
        q = self.model.encode(pad_frames(qframes, self.frames)[None])
        if radius is None:
            dist, ids = index.search(q, max(SHORTLIST_FACTOR * k, SHORTLIST_MIN))
            pairs = [(float(d), int(i)) for d, i in zip(dist[0], ids[0]) if i >= 0]
        else:
            d, i = index.range_search(q, _check_radius(radius, self.model.metric))[0]
            pairs = [(float(a), int(b)) for a, b in zip(d, i)]
        pairs = [(d, i) for d, i in pairs if i != exclude]
        items = self.catalog.many([i for _, i in pairs])
        frames = dict(self.catalog.iter_frames([i for _, i in pairs if i in items], self.dim))
        scored = []
        for d, i in pairs:
            it = items.get(i)
            if it is None or it.status != "ready" or i not in frames:
                continue  # deleted since the index was loaded
            sim = qframes @ frames[i].T  # (query frames, item frames) cosines
            score = float(sim.max(axis=1).mean())  # Chamfer: each query frame's best match, averaged
            t = float(it.frame_times[int(sim.max(axis=0).argmax())]) if it.kind == "video" and it.frame_times else None
            scored.append((int(d) if hamming else None, round(score, 6), it, t))
        scored.sort(key=(lambda r: (r[0], -r[1])) if hamming else (lambda r: -r[1]))  # stable: index order on ties
        return [Hit(id=it.id, path=it.path, kind=it.kind, distance=dd, score=sc, time=t)
                for dd, sc, it, t in scored[:k]]

    def stats(self) -> dict[str, Any]:
        """Sizes for people and benchmarks: items, bytes of catalog and index."""
        idx = self.index_path.stat().st_size if self.index_path.exists() else 0
        return {"items": len(self), "catalog_bytes": self.catalog.nbytes(), "index_bytes": idx,
                "model": self.model.label, "frames": self.frames, "dim": self.dim, "backbone": self.backbone,
                "sampling": self.sampling}


def _check_id(item_id: Any) -> int:
    if isinstance(item_id, bool) or not isinstance(item_id, (int, np.integer)) or int(item_id) < 0:
        raise InputError(f"item id must be a non-negative integer, got {item_id!r}")
    return int(item_id)


def _check_radius(radius: Any, metric: str) -> float | int:
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)) \
            or not np.isfinite(radius):
        raise InputError(f"radius must be a finite number, got {radius!r}")
    if metric == "hamming":
        if float(radius) != int(radius) or radius < 0:
            raise InputError(f"radius is a Hamming distance for this collection's codes: a whole number >= 0, "
                             f"got {radius!r}")
        return int(radius)
    return float(radius)


def _frame_encoder(backbone: str) -> Any:
    from bitseek.encode.frames import FrameEncoder

    return FrameEncoder(backbone=backbone)
