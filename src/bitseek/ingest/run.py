"""``ingest``: files and folders -> decoded frames -> frame features -> catalog rows -> index.

One file at a time through the state machine of ``bitseek.collection`` (pending -> ready -> indexed).
Decoding runs one file ahead in a thread (PyAV releases the GIL) while the extractor encodes the
previous file, so decode and feature extraction overlap on a multi-core machine.

What a re-run does with each file, cheapest check first: same path, size and mtime as a ready item:
unchanged (not even hashed). Otherwise the SHA-256 of its bytes decides: a known content at a path
that no longer exists was moved (the row follows it); a known content whose path still exists is a
duplicate (skipped, reported); a known path with new content was modified (the old item is replaced).
Only new content is decoded.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bitseek.collection import DECODE_SHORT_SIDE, Collection
from bitseek.errors import BitseekError
from bitseek.ingest.models import ItemModel, pad_frames, parse_model_arg
from bitseek.ingest.walk import content_hash, guess_kind, walk_sources

__all__ = ["IngestReport", "Decoded", "ingest", "decode_file", "make_thumbnail"]

log = logging.getLogger(__name__)

THUMB_SIZE = 256
# The index file is re-saved (atomically, whole) at most every SAVE_EVERY_S seconds, and never more
# often than SAVE_COST_RATIO times the last save took, so saving stays under ~10% of the run
# however large the index grows. What the file lags behind is re-added from the catalog on open.
SAVE_EVERY_S = 2.0
SAVE_COST_RATIO = 10.0


@dataclass
class IngestReport:
    """What one run did; ``failed`` lists ``(path, reason)`` of every file skipped as unreadable."""

    added: int = 0
    frames: int = 0
    unchanged: int = 0
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    moved: int = 0
    replaced: int = 0
    pruned: int = 0
    ignored: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    items: int = 0
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class Decoded:
    """A decoded file: RGB frames ``(n, H, W, 3)`` uint8, their times, duration, thumbnail JPEG."""

    pixels: np.ndarray
    times: np.ndarray
    duration: float | None
    thumbnail: bytes
    width: int
    height: int


def make_thumbnail(rgb: np.ndarray, size: int = THUMB_SIZE) -> bytes:
    """A JPEG no larger than ``size`` pixels on its long side."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def decode_file(path: Path, kind: str, frames: int, sampling: str) -> Decoded:
    """Decode a video (``frames`` sampled frames) or an image (one frame) with ``bitseek.media``."""
    if kind == "image":
        from bitseek.media import read_image

        rgb = read_image(path)
        pixels = rgb[None]
        times = np.zeros(1, dtype=np.float64)
        duration = None
    else:
        from bitseek.media import sample_video

        pixels, times, duration = sample_video(path, frames, mode=sampling, short_side=DECODE_SHORT_SIDE)
        if len(pixels) == 0:
            raise BitseekError(f"{path}: no decodable frames")
    mid = pixels[len(pixels) // 2]
    return Decoded(pixels, np.asarray(times, dtype=np.float64), None if duration is None else float(duration),
                   make_thumbnail(mid), int(mid.shape[1]), int(mid.shape[0]))


def _failure(path: Path, e: BaseException) -> str:
    """Why a file was skipped, without repeating its path (the report pairs the two)."""
    msg = str(e)
    for prefix in (f"{path}: ", f"{path.name}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if isinstance(e, BitseekError):
        return msg
    return f"cannot decode ({type(e).__name__}: {msg})"


def ingest(sources: list[str], directory: str | os.PathLike[str], *, frames: int | None = None,
           sampling: str | None = None, backbone: str | None = None, model: str | None = None,
           prune: bool = False, show_progress: bool = True, decode: Callable[..., Decoded] = decode_file,
           encoder: Any = None, save_every: float = SAVE_EVERY_S) -> IngestReport:
    """Add the media under ``sources`` to the collection at ``directory`` (created if new).

    ``decode`` and ``encoder`` (an object with ``encode(pixels) -> (n, dim)`` and ``dim``) default to
    ``bitseek.media`` and the collection's ``FrameEncoder``.
    """
    t0 = time.perf_counter()
    request = parse_model_arg(model) if model else None
    root = Path(os.path.expanduser(str(directory)))
    files, ignored = walk_sources(sources, skip=root.resolve() if root.exists() else None)
    dim = None if encoder is None else int(encoder.dim)
    col = Collection.create(root, frames=frames, sampling=sampling, backbone=backbone, dim=dim)
    report = IngestReport(ignored=ignored)
    try:
        def get_encoder() -> Any:  # loaded when the first new file needs it: a no-op re-run stays fast
            enc = encoder if encoder is not None else col.frame_encoder()
            if int(enc.dim) != col.dim:
                raise BitseekError(f"--backbone: the frame extractor gives {enc.dim}-d features, the collection "
                                   f"holds {col.dim}-d")
            return enc

        _run(col, files, report, decode, get_encoder, show_progress, save_every)
        if prune:
            gone = [it.id for it in col.catalog.items("ready") if not Path(it.path).exists()]
            report.pruned = col.remove(gone)
        changed = bool(report.added or report.replaced or report.pruned)
        if col.dirty:
            col.save_index()
        if request is not None:
            _apply_model(col, request)
        if changed:
            col.export_features()
        report.items = len(col)
        report.model = col.model.label
    finally:
        col.close()
    report.seconds = time.perf_counter() - t0
    return report


def _run(col: Collection, files: list[Path], report: IngestReport, decode: Callable[..., Decoded],
         get_encoder: Callable[[], Any], show_progress: bool, save_every: float) -> None:
    from bitseek.progress import progress

    cat = col.catalog
    bar = progress(total=len(files), desc="ingest", unit="file", show=show_progress)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitseek-decode")
    inflight: deque[tuple[int, Path, Future[Decoded], float]] = deque()
    last_save = time.monotonic()
    save_cost = 0.0
    t_start = time.perf_counter()

    def timed_decode(p: Path, kind: str) -> tuple[Decoded, float]:
        t = time.perf_counter()
        d = decode(p, kind, col.frames, col.sampling)
        return d, time.perf_counter() - t

    def finish_one() -> None:
        nonlocal last_save, save_cost
        item_id, path, fut, _ = inflight.popleft()

        def skip(e: BaseException) -> None:
            cat.delete([item_id])
            reason = _failure(path, e)
            report.failed.append((str(path), reason))
            log.debug("skipped %s: %s", path, reason)
            bar.update(1)

        try:
            d, dt = fut.result()
        except Exception as e:  # one unreadable file must not stop a long ingest
            skip(e)
            return
        report.decode_seconds += dt
        enc = get_encoder()
        t = time.perf_counter()
        try:
            feats = np.asarray(enc.encode(d.pixels), dtype=np.float32)
        except BitseekError as e:  # e.g. an image too small or too large for the extractor
            skip(e)
            return
        report.encode_seconds += time.perf_counter() - t
        cat.mark_ready(item_id, feats.astype(np.float16), d.times.tolist(), d.duration, d.thumbnail, d.width,
                       d.height, col.sampling if len(d.times) > 1 or d.duration is not None else None)
        col.add_ready([item_id], pad_frames(feats.astype(np.float16).astype(np.float32), col.frames)[None])
        report.added += 1
        report.frames += int(feats.shape[0])
        el = max(time.perf_counter() - t_start, 1e-9)
        bar.set_postfix(frames=report.frames, fps=f"{report.frames / el:.1f}", refresh=False)
        bar.update(1)
        if time.monotonic() - last_save >= max(save_every, SAVE_COST_RATIO * save_cost):
            t = time.monotonic()
            col.save_index()
            last_save = time.monotonic()
            save_cost = last_save - t

    try:
        for path in files:
            try:
                st = path.stat()
            except OSError as e:
                report.failed.append((str(path), f"cannot read ({e.strerror})"))
                log.debug("skipped %s: cannot read (%s)", path, e.strerror)
                bar.update(1)
                continue
            spath = str(path)
            known = [it for it in cat.by_path(spath) if it.status == "ready"]
            if any(it.size == st.st_size and it.mtime_ns == st.st_mtime_ns for it in known):
                report.unchanged += 1
                bar.update(1)
                continue
            try:
                digest = content_hash(path)
            except OSError as e:
                report.failed.append((spath, f"cannot read ({e.strerror})"))
                log.debug("skipped %s: cannot read (%s)", path, e.strerror)
                bar.update(1)
                continue
            same = cat.by_hash(digest)
            if same is not None and known and same.id not in {it.id for it in known}:
                col.remove([it.id for it in known])  # this path now holds another item's content
                report.replaced += 1
            if same is not None:
                if same.path == spath:  # touched, same bytes
                    cat.set_path(same.id, spath, st.st_size, st.st_mtime_ns)
                    report.unchanged += 1
                elif same.status == "ready" and not Path(same.path).exists():
                    cat.set_path(same.id, spath, st.st_size, st.st_mtime_ns)
                    report.moved += 1
                else:
                    report.duplicates.append((spath, same.id))
                bar.update(1)
                continue
            if known:  # same path, new content: the old item is gone from disk
                col.remove([it.id for it in known])
                report.replaced += 1
            kind = guess_kind(path)
            item_id = cat.add_pending(spath, st.st_size, st.st_mtime_ns, digest, kind)
            inflight.append((item_id, path, pool.submit(timed_decode, path, kind), time.perf_counter()))
            while len(inflight) > 1:
                finish_one()
        while inflight:
            finish_one()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _apply_model(col: Collection, request: dict[str, Any]) -> None:
    """Switch the collection to the requested model when it is not the current one."""
    cur = col.model_desc
    kind = request["kind"]
    if kind == "float":
        if cur.get("kind") != "float":
            col.switch_model(ItemModel.float_model(col.dim, col.backbone))
        return
    if kind == "itq":
        if cur.get("kind") == "itq" and int(cur.get("bits", 0)) == int(request["bits"]):
            return
        ids = col.catalog.ids("ready").tolist()
        means = np.stack([pad_frames(f, col.frames).mean(axis=0) for _, f in col.catalog.iter_frames(ids, col.dim)]) if ids \
            else np.zeros((0, col.dim), np.float32)
        col.switch_model(ItemModel.fit_itq(col.root, int(request["bits"]), means))
        return
    model = ItemModel.from_checkpoint(col.root, request["path"], col.dim, col.frames)
    if model.fingerprint != col.model.fingerprint:
        col.switch_model(model)
