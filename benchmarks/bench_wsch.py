"""WSCH speed and memory beside ConMH on FCVID-shaped input, and the chunked SSD scan against the recurrence.

Three measurements, merged into ``benchmarks/results/wsch.json`` (one entry per device kind,
written atomically):

1. Training throughput (clips/s through ``training_step`` + backward + Adam step, both views) and
   peak memory of WSCH in each of its phases ("recon" at mask 0.9, "cluster" and "contrastive" at
   mask 0.6) and of ConMH, on the same (B, 25, 4096) input, 64 bits. Every model runs in its own
   spawned process, so the CPU figure (peak resident set of that process) is not polluted by the
   other model; on CUDA it is ``torch.cuda.max_memory_allocated``. AMP (bf16, else fp16) on CUDA.
2. The k-means step of a WSCH cycle (encode N videos under two views + faiss k-means, 800 centres).
3. The SSD scan (``ssd_scan``, one chunk = WSCH's setting, and fixed-size chunks) against the
   per-step recurrence (``ssd_reference`` in float32) at WSCH's SSD shape (16 heads x 128, state 64)
   over several sequence lengths, with the largest difference between them.

Examples::

    python benchmarks/bench_wsch.py --device cpu --batch 16 --steps 3
    python benchmarks/bench_wsch.py --device cuda --batch 128 --steps 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

# A sibling module, found because Python puts this script's folder on sys.path (the spawned
# workers inherit that path).
from _harness import machine_info, params_m, pick_device, read_previous, rss_mb, sync, time_training, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "wsch.json"
FRAMES, DIM, BITS = 25, 4096, 64


def _build(model_name: str) -> torch.nn.Module:
    """The 64-bit FCVID-shaped model; ConMH import failures propagate to the caller (reported, not hidden)."""
    if model_name == "wsch":
        from bitseek.models.wsch import WSCH, WSCHConfig

        model = WSCH(WSCHConfig(bits=BITS, feature_dim=DIM, max_frames=FRAMES))
        sd = model.state_dict()  # give the "cluster" phase a full set of centres without running k-means
        gen = torch.Generator().manual_seed(0)
        sd["cluster_centers"] = torch.randn(sd["cluster_centers"].shape, generator=gen).sign()
        sd["cluster_count"] = torch.tensor(sd["cluster_centers"].shape[0])
        model.load_state_dict(sd)
        return model
    from bitseek.models.conmh import ConMH, ConMHConfig

    return ConMH(ConMHConfig(bits=BITS, feature_dim=DIM, max_frames=FRAMES))


def _train_worker(model_name: str, phase: str, device_name: str, batch: int, steps: int, warmup: int,
                  threads: int) -> dict[str, Any]:
    """Runs in a fresh process: build, train ``warmup + steps`` steps, time the last ``steps``."""
    device = torch.device(device_name)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    feats = torch.randn(batch, FRAMES, DIM, device=device)
    rss_before = rss_mb()
    model = _build(model_name).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    timing = time_training(model, opt, lambda: model.training_step({"feats": feats}, phase)["loss"], device,
                           batch=batch, steps=steps, warmup=warmup, unit="clips")
    out = {"phase": phase, **timing, "params_m": params_m(model)}
    if device.type != "cuda":
        out["rss_growth_mb"] = rss_mb() - rss_before  # model + optimiser state + activations (peak)
    return out


def _run_isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Call ``fn(*args)`` in a spawned process; an exception there comes back as {"error": ...}."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        try:
            return pool.apply(fn, args)
        except Exception as e:  # e.g. ConMH not importable in this checkout
            return {"error": f"{type(e).__name__}: {e}"}


def bench_kmeans(device: torch.device, videos: int, batch: int) -> dict[str, Any]:
    """One clustering step of the WSCH cycle on ``videos`` random FCVID-shaped clips."""
    from torch.utils.data import DataLoader, TensorDataset

    from bitseek.models.base import EpochContext
    from bitseek.models.wsch import WSCH, WSCHConfig

    torch.manual_seed(0)
    model = WSCH(WSCHConfig(bits=BITS, feature_dim=DIM, max_frames=FRAMES)).to(device)
    data = TensorDataset(torch.randn(videos, FRAMES, DIM))

    def loader(shuffle: bool = False):
        return ({"feats": x} for (x,) in DataLoader(data, batch_size=batch, shuffle=shuffle))

    ctx = EpochContext(device, loader)
    timings = []
    for _ in range(2):  # the second call is warm-started from the first call's centres
        sync(device)
        start = time.perf_counter()
        info = model.update_clusters(ctx)
        sync(device)
        timings.append({"seconds": time.perf_counter() - start, **info})
    return {"videos": videos, "codes": 2 * videos, "n_clusters": model.cfg.n_clusters, "runs": timings}


def _time(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def bench_ssd(device: torch.device, lengths: list[int], batch: int, chunks: list[int], max_whole: int,
              repeat: int) -> list[dict[str, Any]]:
    """Scan vs recurrence at WSCH's SSD shape (d_model 2048: 16 heads x 128, d_state 64)."""
    from bitseek.models.layers.ssd import ssd_reference, ssd_scan

    heads, headdim, d_state = 16, 128, 64
    rows = []
    for length in lengths:
        gen = torch.Generator().manual_seed(length)
        x = torch.randn(batch, length, heads, headdim, generator=gen).to(device)
        dt = torch.nn.functional.softplus(torch.randn(batch, length, heads, generator=gen) - 3).to(device)
        A = -torch.empty(heads).uniform_(1, 16, generator=gen).to(device)
        B = torch.randn(batch, length, 1, d_state, generator=gen).to(device)
        C = torch.randn(batch, length, 1, d_state, generator=gen).to(device)
        naive_y, _ = ssd_reference(x, dt, A, B, C, dtype=torch.float32)
        row: dict[str, Any] = {"length": length, "batch": batch,
                               "naive_s": _time(lambda: ssd_reference(x, dt, A, B, C, dtype=torch.float32),
                                                device, repeat)}
        for chunk in chunks:
            key = "whole" if chunk == 0 else f"chunk{chunk}"
            if chunk == 0 and length > max_whole:
                row[f"{key}_s"] = None  # one L x L block per head: memory grows with L^2
                continue
            y, _ = ssd_scan(x, dt, A, B, C, chunk_size=chunk)
            row[f"{key}_s"] = _time(lambda c=chunk: ssd_scan(x, dt, A, B, C, chunk_size=c), device, repeat)
            row[f"{key}_speedup"] = row["naive_s"] / row[f"{key}_s"]
            row[f"{key}_max_abs_diff"] = float((y - naive_y).abs().max())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch", type=int, default=0, help="training batch (default 128 on cuda, 16 on cpu)")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per phase")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--kmeans-videos", type=int, default=0, help="videos clustered (default 4096 cuda, 1024 cpu)")
    ap.add_argument("--ssd-lengths", type=int, nargs="+", default=[25, 100, 400, 1600])
    ap.add_argument("--ssd-batch", type=int, default=2)
    ap.add_argument("--ssd-chunks", type=int, nargs="+", default=[0, 64], help="0 = whole sequence")
    ap.add_argument("--ssd-max-whole", type=int, default=400, help="longest length run as one chunk")
    ap.add_argument("--skip-conmh", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    batch = args.batch or (128 if device.type == "cuda" else 16)
    load_start = list(os.getloadavg())
    train: dict[str, Any] = {}
    for phase in ("recon", "cluster", "contrastive"):
        train[f"wsch/{phase}"] = _run_isolated(_train_worker, "wsch", phase, str(device), batch, args.steps,
                                               args.warmup, args.threads)
        print(f"wsch/{phase}: {json.dumps(train[f'wsch/{phase}'])}", file=sys.stderr)
    if not args.skip_conmh:
        train["conmh"] = _run_isolated(_train_worker, "conmh", "train", str(device), batch, args.steps,
                                       args.warmup, args.threads)
        print(f"conmh: {json.dumps(train['conmh'])}", file=sys.stderr)
    kmeans_videos = args.kmeans_videos or (4096 if device.type == "cuda" else 1024)
    result = {
        **machine_info(device),
        "load_average_at_start": load_start,  # other processes on a shared machine slow every timing
        "train": train,
        "kmeans_step": bench_kmeans(device, kmeans_videos, batch=128),
        "ssd_scan_vs_recurrence": bench_ssd(device, args.ssd_lengths, args.ssd_batch, args.ssd_chunks,
                                            args.ssd_max_whole, repeat=3),
        "load_average_at_end": list(os.getloadavg()),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing = read_previous(args.out)
    doc = {"benchmark": "wsch", "input": f"synthetic FCVID-shaped features (B, {FRAMES}, {DIM}), {BITS} bits",
           "runs": dict(existing.get("runs", {}))}
    doc["runs"][device.type] = result
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()
