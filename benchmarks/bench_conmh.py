"""ConMH speed and memory on FCVID-shaped input (25 frames x 4096-d VGG features, 64 bits).

Measures training throughput (clips/s through ``training_step`` + backward + Adam step, both
views included), peak memory, and encoding throughput (clips/s through ``encode``). The paper
trains with batch 512 on a GPU; on CPU the default batch is smaller (32) so that a run finishes in
seconds -- pass ``--batch`` to change it. AMP (bf16 where supported, else fp16 with loss scaling)
is used on CUDA, fp32 elsewhere.

Results are merged into ``benchmarks/results/conmh.json`` (one entry per device kind), written
atomically. Example::

    python benchmarks/bench_conmh.py --device cpu --batch 32 --steps 5
    python benchmarks/bench_conmh.py --device cuda --batch 512 --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from bitseek.atomic import atomic_write_text
from bitseek.models.conmh import ConMH, ConMHConfig

RESULTS = Path(__file__).resolve().parent / "results" / "conmh.json"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device) -> tuple[Callable[[], Any], torch.dtype | None]:
    if device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), dtype


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    # Linux reports ru_maxrss in KiB: the whole process's peak resident set (Python + torch + data).
    return {"peak_process_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_training(model: ConMH, device: torch.device, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    cfg = model.cfg
    feats = torch.randn(batch, cfg.max_frames, cfg.feature_dim, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast, dtype = _autocast(device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model.training_step({"feats": feats})["loss"]
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"batch": batch, "steps": steps, "seconds": elapsed, "clips_per_s": batch * steps / elapsed,
            "seconds_per_step": elapsed / steps, "final_loss": float(loss.detach()),
            "precision": str(dtype).replace("torch.", "") if dtype else "fp32", **_peak_memory_mb(device)}


@torch.no_grad()
def bench_encoding(model: ConMH, device: torch.device, batch: int, steps: int) -> dict[str, Any]:
    cfg = model.cfg
    feats = torch.randn(batch, cfg.max_frames, cfg.feature_dim, device=device)
    autocast, dtype = _autocast(device)
    model.eval()
    with autocast():
        model.encode({"feats": feats})  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast():
            codes = model.encode({"feats": feats})
    _sync(device)
    elapsed = time.perf_counter() - start
    assert codes.shape == (batch, cfg.bits)
    return {"batch": batch, "steps": steps, "seconds": elapsed, "clips_per_s": batch * steps / elapsed,
            "precision": str(dtype).replace("torch.", "") if dtype else "fp32"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch", type=int, default=0, help="training batch (default 512 on cuda, 32 on cpu)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--encode-batch", type=int, default=128, help="encoding batch (official test batch 128)")
    ap.add_argument("--encode-steps", type=int, default=5)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    device = _device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch = args.batch or (512 if device.type == "cuda" else 32)
    torch.manual_seed(0)
    cfg = ConMHConfig(bits=args.bits, transformer_type="small")  # FCVID shape: 25 x 4096
    model = ConMH(cfg).to(device)

    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # CPU numbers on a shared machine depend on what else runs: record the load at the start.
        "load_avg_1m_at_start": os.getloadavg()[0],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "note": ("paper batch 512" if batch == 512 else f"batch {batch} (paper: 512; smaller on CPU)"),
        "train": bench_training(model, device, batch, args.steps, args.warmup),
        "encode": bench_encoding(model, device, args.encode_batch, args.encode_steps),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing: dict[str, Any] = {}
    if args.out.exists():
        with contextlib.suppress(json.JSONDecodeError, OSError):
            existing = json.loads(args.out.read_text())
    doc = {"benchmark": "conmh", "input": "FCVID-shaped synthetic features (B, 25, 4096)",
           "model_config": asdict(cfg), "runs": dict(existing.get("runs", {}))}
    doc["runs"][device.type] = result
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
