"""Extract once, keep on disk: CVNet's global descriptors and fp16 re-rank maps of a revisitop set.

An extraction is hours on ROxf/RPar + 1M, so it is cut into chunks of ``chunk`` images, each one
:class:`~bitseek.codes.FeatureSet` file written atomically. A killed run leaves only whole chunks
behind (and perhaps a temporary that the next write sweeps); running again skips every chunk that
is on disk and carries on from the first missing one, so nothing is computed twice and nothing
half-written is ever read.

Layout under the cache folder, one sub-folder per extraction key::

    <cache>/<split>-<kind>-<key12>/manifest.json         what was extracted, by which weights, how
                                  /00000.fs, 00001.fs …  chunk c: images rows[c*chunk : (c+1)*chunk]

The key is a digest of everything the numbers depend on: the model's identity (a checksum of the
weights file, or the seed of random weights), the scales, the query crop rule, the image names and
the rows extracted. Other weights or settings therefore never read a stale cache.

* ``kind="global"``: one float32 row per image (the multi-scale descriptor), ids = image indices.
* ``kind="maps"``: ``model.rerank_features`` of the unscaled image, stored fp16 channels-last: one
  row of 1024 values per map position; the chunk's ``attrs`` hold each image's (h, w), so one
  image's map is a contiguous slice of a memory-mapped file (:class:`MapStore`).
* ``kind="pyramid"``: that map's convolved re-rank pyramid
  (:class:`~bitseek.models.cvnet.rerank.Pyramid`, ``model.rerank.project``), stored the same way: one
  row of 256 values per position of each level, the levels one after another; ``attrs`` add each
  image's level sizes. Less than half the bytes of ``maps``, and the re-ranker's per-scale 3x3 convs
  are done once per image here rather than once per pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.atomic import atomic_write_text
from bitseek.codes import FeatureSet
from bitseek.encode.multiscale import MultiScaleImages, multiscale_descriptors, rerank_maps, rerank_pyramids
from bitseek.errors import FileFormatError, InputError

__all__ = ["CACHE_FORMAT", "DEFAULT_CHUNK", "ConcatMaps", "FeatureCache", "MapStore"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_CHUNK = 256
KINDS = ("global", "maps", "pyramid")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """One chunked extraction: ``kind`` features of ``rows`` of ``images`` under ``root``.

    ``names`` identify the images (revisitop names or distractor paths); ``model_id`` identifies the
    weights. ``rows`` (default: every image) lets a cache hold only some images' maps, e.g. the
    distractors that reach a shortlist."""

    def __init__(self, root: str | os.PathLike[str], split: str, kind: str, images: MultiScaleImages,
                 names: Sequence[str], model_id: str, rows: Sequence[int] | None = None,
                 chunk: int = DEFAULT_CHUNK) -> None:
        if kind not in KINDS:
            raise InputError(f"feature cache kind must be one of {list(KINDS)}, got {kind!r}")
        if len(names) != len(images):
            raise InputError(f"{len(names)} names for {len(images)} images")
        if chunk < 1:
            raise InputError(f"chunk must be >= 1 image, got {chunk}")
        self.images, self.kind, self.split = images, kind, split
        self.rows = np.arange(len(images), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= len(images)):
            raise InputError(f"rows outside the {len(images)} images")
        self.key = {
            "format": CACHE_FORMAT, "kind": kind, "split": split, "model": model_id,
            "scales": list(images.scales) if kind == "global" else [1.0],
            "crop": images.crop if images.boxes is not None else None,
            "boxes_sha256": _digest([list(b) if b is not None else None for b in images.boxes])
            if images.boxes is not None else None,
            "names_sha256": _digest(list(names)), "n_images": len(images),
            "rows_sha256": hashlib.sha256(self.rows.astype("<i8").tobytes()).hexdigest(),
        }
        self.dir = Path(root) / f"{split}-{kind}-{_digest(self.key)[:12]}"
        self.names = names
        self.chunk = self._chunk_size(int(chunk))

    # ------------------------------------------------------------------ layout
    def _chunk_size(self, chunk: int) -> int:
        """A cache already on disk keeps its own chunk size (its files are cut by it)."""
        m = self.dir / "manifest.json"
        if not m.is_file():
            return chunk
        try:
            manifest = json.loads(m.read_text())
            if manifest.get("key") != self.key:
                raise ValueError("key differs")
            return int(manifest["chunk"])
        except (ValueError, KeyError, TypeError) as e:
            raise FileFormatError(f"{m}: not this extraction's manifest ({e}); delete {self.dir} to extract again") \
                from None

    @property
    def n_chunks(self) -> int:
        return -(-len(self.rows) // self.chunk)

    def chunk_path(self, c: int) -> Path:
        return self.dir / f"{c:05d}.fs"

    def chunk_rows(self, c: int) -> np.ndarray:
        return self.rows[c * self.chunk:(c + 1) * self.chunk]

    def missing(self) -> list[int]:
        """Chunks not on disk yet (each file on disk is whole: it was written atomically)."""
        return [c for c in range(self.n_chunks) if not self.chunk_path(c).is_file()]

    @property
    def complete(self) -> bool:
        return (self.dir / "manifest.json").is_file() and not self.missing()

    # ------------------------------------------------------------------ extraction
    def extract(self, model: Any, *, device: Any = "cpu", num_workers: int = 0, show_progress: bool = True,
                desc: str = "") -> "FeatureCache":
        """Compute every missing chunk, in order; chunks already on disk are not recomputed."""
        from bitseek.progress import progress

        todo = self.missing()
        if not todo and (self.dir / "manifest.json").is_file():
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "manifest.json", json.dumps(
            {"key": self.key, "chunk": self.chunk, "n_rows": int(len(self.rows))}, indent=1))
        done = len(self.rows) - sum(len(self.chunk_rows(c)) for c in todo)
        if done:
            log.info("%s: %d of %d images already extracted in %s; resuming", desc or self.dir.name, done,
                     len(self.rows), self.dir)
        bar = progress(total=len(self.rows), desc=desc or f"{self.split} {self.kind}", unit="img",
                       show=show_progress)
        bar.update(done)
        try:
            for c in todo:
                self._write_chunk(c, model, device, num_workers, bar)
        finally:
            bar.close()
        return self

    def _write_chunk(self, c: int, model: Any, device: Any, num_workers: int, bar: Any) -> None:
        rows = self.chunk_rows(c)
        names = [str(self.names[int(i)]) for i in rows]
        if self.kind == "global":
            x = multiscale_descriptors(model, self.images, rows.tolist(), device=device, num_workers=num_workers,
                                       progress=bar)
            fs = FeatureSet(x, ids=rows, meta={"name": names}, attrs={"kind": "global"}, dtype="float32")
        elif self.kind == "pyramid":
            pyrs = rerank_pyramids(model, self.images, rows.tolist(), device=device, num_workers=num_workers,
                                   progress=bar)
            parts = [lv.reshape(lv.shape[0], -1).T for p in pyrs for lv in p.levels]
            flat = np.concatenate(parts) if parts else np.zeros((0, 1), np.float16)
            fs = FeatureSet(flat, attrs={"kind": "pyramid", "image_ids": rows.tolist(), "names": names,
                                         "shapes": [list(p.size) for p in pyrs],
                                         "levels": [[list(lv.shape[1:]) for lv in p.levels] for p in pyrs]},
                            dtype="float16")
        else:
            maps = rerank_maps(model, self.images, rows.tolist(), device=device, num_workers=num_workers, progress=bar)
            shapes = [list(m.shape[1:]) for m in maps]
            flat = np.concatenate([m.reshape(m.shape[0], -1).T for m in maps]) if maps else np.zeros((0, 1), np.float16)
            fs = FeatureSet(flat, attrs={"kind": "maps", "image_ids": rows.tolist(), "shapes": shapes,
                                         "names": names}, dtype="float16")
        fs.save(self.chunk_path(c))

    # ------------------------------------------------------------------ reading
    def _open(self, c: int) -> FeatureSet:
        p = self.chunk_path(c)
        fs = FeatureSet.open(p)
        want = self.chunk_rows(c).tolist()
        got = fs.ids.tolist() if self.kind == "global" else fs.attrs.get("image_ids")
        if got != want:
            raise FileFormatError(f"{p}: holds images {str(got)[:60]}, the cache expects {str(want)[:60]}; "
                                  f"delete {self.dir} to extract again")
        return fs

    def global_descriptors(self) -> np.ndarray:
        """(len(rows), D) float32 descriptors, every chunk checksum-verified."""
        if self.kind != "global":
            raise InputError("global_descriptors: this cache holds re-rank maps")
        self._check_complete()
        parts = []
        for c in range(self.n_chunks):
            fs = self._open(c)
            try:
                fs.verify()
            except FileFormatError as e:
                raise FileFormatError(f"{e}; delete that file and run again to re-extract its images") from None
            parts.append(fs.float32())
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def maps(self) -> "MapStore":
        """The re-rank maps as a MapSource: ``store[image_index] -> (1024, h, w) float16``, or for
        ``kind="pyramid"`` a :class:`~bitseek.models.cvnet.rerank.Pyramid` of float16 levels."""
        if self.kind == "global":
            raise InputError("maps: this cache holds global descriptors")
        self._check_complete()
        return MapStore([self._open(c) for c in range(self.n_chunks)], len(self.images), self.dir)

    def _check_complete(self) -> None:
        if not self.complete:
            raise InputError(f"{self.dir}: extraction not finished ({len(self.missing())} chunks missing); "
                             "run the extraction again, it resumes")


class MapStore:
    """Per-image re-rank maps (or pyramids) read from cache chunks; only the rows of the image asked
    for are touched."""

    def __init__(self, chunks: list[FeatureSet], n_images: int, where: Path) -> None:
        self.n = n_images
        self.where = where
        # image -> (chunk, first row, map (h, w), level sizes or None for a plain map)
        self._index: dict[int, tuple[FeatureSet, int, int, int, list[tuple[int, int]] | None]] = {}
        for fs in chunks:
            start = 0
            levels = fs.attrs.get("levels")
            for j, (i, (h, w)) in enumerate(zip(fs.attrs["image_ids"], fs.attrs["shapes"])):
                lv = [(int(a), int(b)) for a, b in levels[j]] if levels is not None else None
                self._index[int(i)] = (fs, start, int(h), int(w), lv)
                start += sum(a * b for a, b in lv) if lv is not None else int(h) * int(w)
            if start != len(fs):
                raise FileFormatError(f"{fs.path}: {len(fs)} map rows, the shapes it lists need {start}")

    def __len__(self) -> int:
        return self.n

    def __contains__(self, i: int) -> bool:
        return int(i) in self._index

    def __getitem__(self, i: int) -> Any:
        try:
            fs, start, h, w, levels = self._index[int(i)]
        except KeyError:
            raise InputError(f"{self.where}: no re-rank map cached for image {i}") from None
        if levels is None:
            return _channels_first(fs.features[start:start + h * w], h, w)
        from bitseek.models.cvnet.rerank import Pyramid

        out = []
        for a, b in levels:
            out.append(_channels_first(fs.features[start:start + a * b], a, b))
            start += a * b
        return Pyramid((h, w), tuple(out))


def _channels_first(rows: Any, h: int, w: int) -> np.ndarray:
    r = np.asarray(rows)
    return np.ascontiguousarray(r.T.reshape(r.shape[1], h, w))


class ConcatMaps:
    """Several map sources one after another (database, then distractors), indexed as one."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"map index {i} outside {len(self)} images")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - int(self.offsets[k])]
