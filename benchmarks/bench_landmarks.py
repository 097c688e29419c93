"""The built-in landmark benchmark: build time, and what simple global descriptors score on it.

Why: the benchmark must be informative (a descriptor that sees the scene beats chance), not solved
by image statistics (a colour histogram or the image size must stay far from 100), and keep the
Easy / Hard order of the real datasets. Rows (mAP %, Easy / Medium / Hard, revisitop's evaluator):

* ``random``: mean of 20 random rankings (chance);
* ``size``: nearest image size and aspect ratio (a leak check: should be at chance);
* ``scene-oracle``: every image of the query's photograph first, in random order (what knowing the
  scene alone is worth; Hard/Easy stay below 100 because same-scene negatives and junk exist);
* ``colour-hist``: 8x8x8 RGB histogram, Hellinger-normalised;
* ``thumb16``: 16x16 grey thumbnail, mean-removed, L2-normalised;
* ``cvnet-random`` (``--cvnet``): bitseek's CVNet-R50 global descriptor with random weights, one scale.

    python benchmarks/bench_landmarks.py --size small [--cvnet] [--out benchmarks/results/landmarks.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from bitseek.atomic import atomic_write_text
from bitseek.data.embedded.landmarks import NAME, build_landmarks, read_manifest
from bitseek.data.revisited import load_gnd
from bitseek.eval.revisited import evaluate


def _maps(ranks: np.ndarray, gnd: dict[str, Any]) -> dict[str, float]:
    return {p: r.map for p, r in evaluate(ranks, gnd).items()}


def _rank(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable").T


def _hist(im: Image.Image) -> np.ndarray:
    a = np.asarray(im.convert("RGB")).reshape(-1, 3) // 32
    h = np.sqrt(np.bincount(a[:, 0] * 64 + a[:, 1] * 8 + a[:, 2], minlength=512).astype(np.float64))
    return h / np.linalg.norm(h)


def _thumb(im: Image.Image) -> np.ndarray:
    a = np.asarray(im.convert("L").resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float64).ravel()
    a -= a.mean()
    return a / (np.linalg.norm(a) + 1e-12)


def _describe(root: Path, gnd: dict[str, Any], fn: Callable[[Image.Image], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    jpg = root / NAME / "jpg"
    x = np.stack([fn(Image.open(jpg / f"{n}.jpg")) for n in gnd["imlist"]])
    q = np.stack([fn(Image.open(jpg / f"{n}.jpg").crop(tuple(g["bbx"]))) for n, g in zip(gnd["qimlist"], gnd["gnd"])])
    return q, x


def _cvnet_random(seed: int) -> Callable[[Image.Image], np.ndarray]:
    import torch

    from bitseek.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor
    from bitseek.registry import MODELS

    torch.manual_seed(seed)
    model = MODELS.create("cvnet", depth=50).eval()

    def fn(im: Image.Image) -> np.ndarray:
        t = to_normalized_tensor(np.asarray(im.convert("RGB")), IMAGENET_MEAN, IMAGENET_STD)
        with torch.no_grad():
            return model.global_descriptor(t[None])[0].numpy().astype(np.float64)

    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="build folder (default: a temporary one)")
    ap.add_argument("--cvnet", action="store_true", help="also a random-weight CVNet-R50 global descriptor")
    ap.add_argument("--out", default="benchmarks/results/landmarks.json")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "lm"
        t0 = time.perf_counter()
        build_landmarks(root, size=args.size, seed=args.seed)
        build_s = time.perf_counter() - t0
        man = read_manifest(root)
        gnd = load_gnd(root / NAME / f"gnd_{NAME}.pkl")
        views = json.loads((root / NAME / "views.json").read_text())
        n_db, nq = len(gnd["imlist"]), len(gnd["qimlist"])
        rng = np.random.default_rng(0)
        rows: dict[str, dict[str, float]] = {}
        runs = [_maps(np.stack([rng.permutation(n_db) for _ in range(nq)], 1), gnd) for _ in range(20)]
        rows["random"] = {p: round(float(np.mean([r[p] for r in runs])), 2) for p in runs[0]}
        jpg = root / NAME / "jpg"
        sx = np.array([Image.open(jpg / f"{n}.jpg").size for n in gnd["imlist"]], dtype=np.float64)
        sq = np.array([Image.open(jpg / f"{n}.jpg").size for n in gnd["qimlist"]], dtype=np.float64)
        fx, fq = np.c_[sx / 100, sx[:, :1] / sx[:, 1:]], np.c_[sq / 100, sq[:, :1] / sq[:, 1:]]
        rows["size"] = _maps(np.argsort(((fq[:, None] - fx[None]) ** 2).sum(-1), axis=1, kind="stable").T, gnd)
        scene = np.array([views[n]["scene"] for n in gnd["imlist"]])
        cols = []
        for qn in gnd["qimlist"]:
            same = np.flatnonzero(scene == views[qn]["scene"])
            other = np.flatnonzero(scene != views[qn]["scene"])
            cols.append(np.concatenate([rng.permutation(same), rng.permutation(other)]))
        rows["scene-oracle"] = _maps(np.stack(cols, 1), gnd)
        timings = {}
        describers: dict[str, Callable[[Image.Image], np.ndarray]] = {"colour-hist": _hist, "thumb16": _thumb}
        if args.cvnet:
            describers["cvnet-random"] = _cvnet_random(args.seed)
        for name, fn in describers.items():
            t1 = time.perf_counter()
            q, x = _describe(root, gnd, fn)
            rows[name] = _maps(_rank(q, x), gnd)
            timings[name] = round(time.perf_counter() - t1, 2)
    import PIL

    doc = {
        "benchmark": "landmarks", "size": args.size, "seed": args.seed,
        "sizes": man["sizes"], "labels": man["labels"], "build_seconds": round(build_s, 2),
        "map": rows, "describe_seconds": timings,
        "machine": {"cpus": os.cpu_count(), "load_avg_start": round(load0, 2), "python": platform.python_version(),
                    "numpy": np.__version__, "pillow": PIL.__version__,
                    "omp_threads": os.environ.get("OMP_NUM_THREADS", "")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    for name, r in rows.items():
        print(f"{name:<14} E {r['easy']:6.2f}  M {r['medium']:6.2f}  H {r['hard']:6.2f}")
    print(f"built {args.size} in {build_s:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
