"""CVNet re-ranking cost per query: cached database features (bitseek) against per-pair recomputation (official).

The official test (``test/test_model.py``) extracts the query's stage-3 map once, then for every
shortlisted database image runs the backbone on that image and scores the pair, one pair at a time,
reading each score back to the host. bitseek reads the database side from the re-rank cache and
scores the shortlist in batches (``bitseek.rerank.cvnet``). Both paths get the same precomputed
query map; the database side is what differs. Two caches are timed:

* ``cached`` (what ``bitseek retrieval test`` stores): each database image's convolved pyramid
  (``model.rerank.project``: 3 levels of 256 channels, fp16), so a pair costs the correlation
  slabs and the 4D convs only;
* ``cached_maps``: the 1024-channel stage-3 maps (``model.rerank_features``, fp16), so each pair
  also runs the 3 per-scale 3x3 convs on the candidate.

Set-up (random weights, synthetic images, so nothing is downloaded): ``--pool`` distinct database
images at 1024 px (landscape 1024x768 and one in four portrait 768x1024, as in Revisited Oxford),
a query cropped (``--query-size``) from one of them; their maps are written as an ``--cache-dtype`` cache (fp16 as
``bitseek.encode.revisited_cache`` stores them) and memory-mapped back. The K candidates of a query
cycle through the pool (the cost of a pair depends on the map shapes, not on the pixels).

* ``cached`` / ``cached_maps``: ``CVNetReranker.score`` on all K candidates of each of
  ``--queries`` queries.
* ``official``: backbone + score per pair on the first ``--baseline-pairs`` candidates (default 8:
  one pair costs seconds on a CPU); its per-query cost is the mean per pair times K, marked
  ``extrapolated`` in the results unless ``--baseline-pairs`` >= K.

Each path's wall time and CPU time (``time.process_time``, the child's own user + system time)
are recorded; on a CPU shared with other jobs the CPU-time ratio is the steadier one, and both
speed-ups are reported. Each path runs in its own child process, so each peak memory is its own (CUDA: max allocated; CPU:
the child's peak RSS, model and cache pages included). The scores of the pairs both paths scored
are asserted equal (1e-5 with an fp32 cache; fp16 storage rounding with an fp16 cache, bound
``--fp16-tol``) before any speed is reported.

Usage: ``python benchmarks/bench_rerank.py [--device auto] [--k 100] [--queries 1] [--threads 1]``.
Writes ``benchmarks/results/rerank.json`` atomically (one entry per device and cache dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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

from bitseek.models.cvnet.rerank import Pyramid
from bitseek.registry import MODELS
from bitseek.rerank import CVNetReranker

RESULTS = Path(__file__).resolve().parent / "results" / "rerank.json"
PARTS = ("cached", "cached_maps", "official")
DB_SHAPES = ((768, 1024), (768, 1024), (768, 1024), (1024, 768))  # (H, W), cycled over the pool


def _size(text: str) -> tuple[int, int]:
    """``WxH`` -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def _model(depth: int, device: torch.device, work: Path | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS.create(MODELS.config("cvnet", depth=depth))
    if work is not None:
        model.load_state_dict(torch.load(work / "model.pt", weights_only=True))
    return model.eval().to(device)


class PoolMaps:
    """K cache entries over a pool of P memory-mapped maps (or pyramids): entry c is pool entry c % P."""

    def __init__(self, work: Path, pool: int, k: int, pyramids: bool = False) -> None:
        if pyramids:
            self.maps = [Pyramid(tuple(np.load(work / f"db{j}.npy", mmap_mode="r").shape[1:]),
                                 tuple(np.load(work / f"pyr{j}_{s}.npy", mmap_mode="r") for s in range(3)))
                         for j in range(pool)]
        else:
            self.maps = [np.load(work / f"db{j}.npy", mmap_mode="r") for j in range(pool)]
        self.k = k

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, c: int) -> np.ndarray:
        return self.maps[int(c) % len(self.maps)]


def _spread(model: torch.nn.Module) -> None:
    """Random BN statistics and a sharper classifier, so pairs score apart. At 1024 px, random weights
    still give nearly equal scores (the learner averages over millions of positions): the results
    record their spread beside the difference; ``tests/rerank/test_cvnet.py`` holds equality at
    small sizes where scores spread."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.empty_like(m.running_mean).uniform_(-0.2, 0.2, generator=g))
                m.running_var.copy_(torch.empty_like(m.running_var).uniform_(0.5, 2.0, generator=g))
                m.bias.copy_(torch.empty_like(m.bias).uniform_(-0.3, 0.3, generator=g))
        model.rerank.learner.classifier[2].weight.mul_(30.0)


def prepare(args: argparse.Namespace, work: Path, device: torch.device) -> None:
    model = _model(args.depth, torch.device("cpu"))
    _spread(model)
    model = model.to(device)
    torch.save(model.state_dict(), work / "model.pt")
    g = torch.Generator().manual_seed(1)
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.cache_dtype]
    with torch.inference_mode():
        for j in range(args.pool):
            h, w = DB_SHAPES[j % len(DB_SHAPES)]
            img = torch.randn(1, 3, h, w, generator=g)
            np.save(work / f"img{j}.npy", img.numpy())
            f = model.rerank_features(img.to(device))
            np.save(work / f"db{j}.npy", f[0].to(dtype).cpu().numpy())
            (pyr,) = model.rerank.project(f)
            for s, lv in enumerate(pyr.levels):
                np.save(work / f"pyr{j}_{s}.npy", lv.to(dtype).cpu().numpy())
        first = torch.from_numpy(np.load(work / "img0.npy"))
        for q in range(args.queries):  # crops of pool image q: a true match among noise, so scores spread
            src = torch.from_numpy(np.load(work / f"img{q % args.pool}.npy")) if q else first
            h, w = min(args.query_size[0], src.shape[2]), min(args.query_size[1], src.shape[3])
            img = src[:, :, (src.shape[2] - h) // 2:(src.shape[2] - h) // 2 + h, (src.shape[3] - w) // 2:(src.shape[3] - w) // 2 + w]
            np.save(work / f"q{q}.npy", model.rerank_features(img.to(device))[0].to(dtype).cpu().numpy())


def run_cached(args: argparse.Namespace, work: Path, device: torch.device, pyramids: bool = True) -> dict[str, Any]:
    model = _model(args.depth, device, work)
    qmaps = [np.load(work / f"q{q}.npy", mmap_mode="r") for q in range(args.queries)]
    rr = CVNetReranker(model, qmaps, PoolMaps(work, args.pool, args.k, pyramids), batch_size=args.batch)
    cands = np.arange(args.k)
    rr.score(0, cands[: min(2, args.k)])  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    scores = [rr.score(q, cands) for q in range(args.queries)]  # each ends in one host copy
    sync(device)
    sec = (time.perf_counter() - t0) / args.queries
    cpu = (time.process_time() - c0) / args.queries
    return {"db_cache": "pyramid" if pyramids else "maps", "seconds_per_query": sec, "seconds_per_pair": sec / args.k,
            "cpu_seconds_per_query": cpu,
            "pairs_per_query": args.k, "batch_size": args.batch, **peak_memory_mb(device),
            "scores": [s.tolist() for s in scores]}


def run_official(args: argparse.Namespace, work: Path, device: torch.device) -> dict[str, Any]:
    model = _model(args.depth, device, work)
    pairs = min(args.baseline_pairs, args.k)
    images = [torch.from_numpy(np.load(work / f"img{j}.npy")) for j in range(args.pool)]
    dtype = next(model.parameters()).dtype
    scores = []
    with torch.inference_mode():
        fq0 = torch.from_numpy(np.load(work / "q0.npy"))[None].to(device, dtype)
        float(model.rerank_score_from_features(fq0, model.rerank_features(images[0].to(device))))  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for q in range(args.queries):
            fq = torch.from_numpy(np.load(work / f"q{q}.npy"))[None].to(device, dtype)
            row = []
            for c in range(pairs):
                fk = model.rerank_features(images[c % args.pool].to(device))  # the backbone, every pair
                row.append(float(model.rerank_score_from_features(fq, fk)))  # .cpu() per pair, as official
            scores.append(row)
        per_pair = (time.perf_counter() - t0) / (args.queries * pairs)
        cpu_pair = (time.process_time() - c0) / (args.queries * pairs)
    return {"seconds_per_pair": per_pair, "seconds_per_query": per_pair * args.k, "pairs_timed_per_query": pairs,
            "cpu_seconds_per_query": cpu_pair * args.k,
            "extrapolated": pairs < args.k, **peak_memory_mb(device), "scores": scores}


def child(args: argparse.Namespace, part: str, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--work", str(work),
           *[a for a in sys.argv[1:] if a not in ("--part", "--work")]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--k", type=int, default=100, help="shortlist size (pairs per query)")
    ap.add_argument("--queries", type=int, default=1)
    ap.add_argument("--pool", type=int, default=8, help="distinct database images (maps) the candidates cycle through")
    ap.add_argument("--query-size", type=_size, default=(480, 640), help="query crop WxH (default 640x480)")
    ap.add_argument("--baseline-pairs", type=int, default=8, help="pairs per query timed on the official path")
    ap.add_argument("--batch", type=int, default=8, help="cached path: pairs per batch (capped by memory)")
    ap.add_argument("--cache-dtype", choices=("float16", "float32"), default="float16")
    ap.add_argument("--fp16-tol", type=float, default=5e-3, help="score tolerance with an fp16 cache")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if min(args.k, args.queries, args.pool, args.baseline_pairs, args.batch) < 1:
        ap.error("--k, --queries, --pool, --baseline-pairs and --batch must be positive")
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    if args.part:  # a child: one path, one JSON line on stdout
        res = {"cached": run_cached, "cached_maps": lambda a, w, d: run_cached(a, w, d, pyramids=False),
               "official": run_official}[args.part](args, args.work, device)
        print(json.dumps(res))
        return res

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_rerank_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prepare(args, work, device)
        prep = time.perf_counter() - t0
        maps_mb = sum(np.load(work / f"db{j}.npy", mmap_mode="r").nbytes for j in range(args.pool)) / args.pool / 2**20
        pyr_mb = sum(np.load(work / f"pyr{j}_{s}.npy", mmap_mode="r").nbytes
                     for j in range(args.pool) for s in range(3)) / args.pool / 2**20
        cached = child(args, "cached", work)
        cached_maps = child(args, "cached_maps", work)
        official = child(args, "official", work)
    want = np.array(official.pop("scores"))
    tol = 1e-5 if args.cache_dtype == "float32" else args.fp16_tol
    diffs = {}
    for name, res in (("cached", cached), ("cached_maps", cached_maps)):
        got = np.array([row[: official["pairs_timed_per_query"]] for row in res.pop("scores")])
        diffs[name] = float(np.abs(got - want).max())
        if not diffs[name] <= tol:
            raise SystemExit(f"bench_rerank: {name} and per-pair scores differ by {diffs[name]:.3g} (> {tol:g}); "
                             "no timing reported")
    diff = max(diffs.values())
    result = {
        **machine_info(device),
        "load_avg_1m_at_start": load[0], "load_avg_at_start": list(load), "load_avg_at_end": list(os.getloadavg()),
        "depth": args.depth, "k": args.k, "queries": args.queries, "pool": args.pool,
        "query_size_hw": list(args.query_size), "db_sizes_hw": [list(DB_SHAPES[j % len(DB_SHAPES)])
                                                              for j in range(args.pool)],
        "cache_dtype": args.cache_dtype, "cache_mb_per_image": {"pyramid": pyr_mb, "maps": maps_mb},
        "cached": cached, "cached_maps": cached_maps, "official": official,
        "speedup": official["seconds_per_query"] / cached["seconds_per_query"],
        "speedup_maps_cache": official["seconds_per_query"] / cached_maps["seconds_per_query"],
        # CPU seconds of each child: what the other engineers' jobs on the shared cores change least
        "speedup_cpu_time": official["cpu_seconds_per_query"] / cached["cpu_seconds_per_query"],
        "speedup_cpu_time_maps_cache": official["cpu_seconds_per_query"] / cached_maps["cpu_seconds_per_query"],
        "target_speedup": 10.0,
        "max_abs_score_diff": diffs, "score_tolerance": tol,
        "scores_compared": int(want.size), "score_std": float(want.std()),
        "prepare_seconds": prep,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing = read_previous(args.out)
    doc = {"benchmark": "rerank", "what": "CVNet re-rank cost per query, cached pyramids/maps vs per-pair backbone",
           "runs": dict(existing.get("runs", {}))}
    doc["runs"][f"{device.type}-{args.cache_dtype}-k{args.k}"] = result
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()
