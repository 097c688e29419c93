"""ConMH speed and memory on FCVID-shaped input (25 frames x 4096-d VGG features, 64 bits).

Measures training throughput (clips/s through ``training_step`` + backward + Adam step, both
views included), peak memory, and encoding throughput (clips/s through ``encode``). The paper
trains with batch 512 on a GPU; on CPU the default batch is smaller (32) so that a run finishes in
seconds -- pass ``--batch`` to change it. AMP (bf16 where supported, else fp16 with loss scaling)
is used on CUDA, fp32 elsewhere.

Results are merged into ``benchmarks/results/conmh.json`` (one entry per device kind and batch),
written atomically. Example::

    python benchmarks/bench_conmh.py --device cpu --batch 32 --steps 5
    python benchmarks/bench_conmh.py --device cpu --batch 512 --steps 2   # the paper's batch
    python benchmarks/bench_conmh.py --device cuda --batch 512 --steps 20
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bitseek.models.conmh import ConMH, ConMHConfig

# A sibling module, found because Python puts this script's folder on sys.path.
from _harness import machine_info, params_m, pick_device, read_previous, time_encoding, time_training, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "conmh.json"


def bench_training(model: ConMH, device: torch.device, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    cfg = model.cfg
    feats = torch.randn(batch, cfg.max_frames, cfg.feature_dim, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    return time_training(model, opt, lambda: model.training_step({"feats": feats})["loss"], device,
                         batch=batch, steps=steps, warmup=warmup, unit="clips")


def bench_encoding(model: ConMH, device: torch.device, batch: int, steps: int) -> dict[str, Any]:
    cfg = model.cfg
    feats = torch.randn(batch, cfg.max_frames, cfg.feature_dim, device=device)
    return time_encoding(model, lambda: model.encode({"feats": feats}), device, batch=batch, steps=steps,
                         expected_shape=(batch, cfg.bits), unit="clips")


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

    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch = args.batch or (512 if device.type == "cuda" else 32)
    torch.manual_seed(0)
    cfg = ConMHConfig(bits=args.bits, transformer_type="small")  # FCVID shape: 25 x 4096
    model = ConMH(cfg).to(device)

    result = {
        **machine_info(device),
        # CPU numbers on a shared machine depend on what else runs: record the load at the start.
        "load_avg_1m_at_start": os.getloadavg()[0],
        "params_m": params_m(model),
        "note": ("paper batch 512" if batch == 512 else f"batch {batch} (paper: 512; smaller on CPU)"),
        "train": bench_training(model, device, batch, args.steps, args.warmup),
        "encode": bench_encoding(model, device, args.encode_batch, args.encode_steps),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing = read_previous(args.out)
    doc = {"benchmark": "conmh", "input": "FCVID-shaped synthetic features (B, 25, 4096)",
           "model_config": asdict(cfg), "runs": dict(existing.get("runs", {}))}
    # One entry per device kind and batch, so the CPU run at the paper's batch sits beside the quick one.
    doc["runs"][f"{device.type}-b{batch}"] = result
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()
