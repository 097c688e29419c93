"""CVNet global extraction throughput at the official test's three scales, for 1024-px images.

The official test-time protocol (``bitseek.encode.multiscale``): a uint8 BGR image resized by
OpenCV to 0.7071 / 1 / 1.4142, normalised, one ``global_descriptor`` per scale, the normalised mean.
Timed per scale (the 1.4142 scale has twice the pixels of scale 1) and for the whole
``multiscale_descriptors`` call, on synthetic 1024x768 images (random weights; nothing downloaded).

Usage: ``python benchmarks/bench_cvnet_extract.py [--device auto] [--images 2] [--depth 50] [--threads 1]``.
Writes ``benchmarks/results/cvnet_extract.json`` atomically (one entry per device and depth).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _harness import (
    machine_info,
    peak_memory_mb,
    pick_device,
    read_previous,
    sync,
    write_results,
)

from bitseek.encode.multiscale import (
    DEFAULT_SCALES,
    MultiScaleImages,
    multiscale_descriptors,
    pyramid,
)
from bitseek.registry import MODELS

RESULTS = Path(__file__).resolve().parent / "results" / "cvnet_extract.json"


def synthetic(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour fields plus noise, uint8 BGR: JPEG-like statistics without a file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        f = rng.uniform(0.002, 0.02, (3, 2))
        base = np.stack([np.sin(xx * a + yy * b) for a, b in f], axis=-1) * 90 + 128
        out.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--depth", type=int, default=50, choices=(50, 101))
    ap.add_argument("--images", type=int, default=2, help="timed images (after one warm-up image)")
    ap.add_argument("--size", default="1024x768", help="image WxH")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be at least 1")
    w, h = (int(v) for v in args.size.lower().split("x"))
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    model = MODELS.create(MODELS.config("cvnet", depth=args.depth)).eval().to(device)
    ims = synthetic(args.images + 1, h, w)

    per_scale: dict[str, Any] = {}
    with torch.inference_mode():
        for s in DEFAULT_SCALES:
            xs = [torch.from_numpy(pyramid(im, (s,))[0]).unsqueeze(0) for im in ims]
            model.global_descriptor(xs[0].to(device))  # warm-up at this size
            sync(device)
            t0 = time.perf_counter()
            for x in xs[1:]:
                d = model.global_descriptor(x.to(device))
            sync(device)
            sec = (time.perf_counter() - t0) / args.images
            per_scale[str(s)] = {"input_hw": list(xs[0].shape[-2:]), "seconds_per_image": sec,
                                 "images_per_s": 1.0 / sec, "dim": int(d.shape[1])}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = MultiScaleImages(lambda i: ims[i], len(ims), DEFAULT_SCALES)
    t0 = time.perf_counter()
    desc = multiscale_descriptors(model, data, rows=range(1, len(ims)), device=device)  # includes resizes
    sec = (time.perf_counter() - t0) / args.images
    if desc.shape != (args.images, model.dim) or not np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4):
        raise SystemExit(f"bench_cvnet_extract: bad descriptors {desc.shape}")
    result = {
        **machine_info(device), "load_avg_1m_at_start": load, "depth": args.depth, "image_hw": [h, w],
        "images": args.images, "scales": list(DEFAULT_SCALES), "per_scale": per_scale,
        "three_scales": {"seconds_per_image": sec, "images_per_s": 1.0 / sec,
                         "note": "multiscale_descriptors: cv2 resizes + normalisation + 3 forwards + aggregation"},
        **peak_memory_mb(device), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing = read_previous(args.out)
    doc = {"benchmark": "cvnet_extract", "what": "CVNet multi-scale global extraction throughput, 1024-px images",
           "runs": dict(existing.get("runs", {}))}
    doc["runs"][f"{device.type}-r{args.depth}"] = result
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()
