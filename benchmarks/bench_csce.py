"""CSCE-Net speed and memory: training and encoding throughput on synthetic images.

Two set-ups:

* ``paper`` — ResNet-50, 224x224 crops, released optimiser (RMSprop lr 1e-5, weight decay 1e-5),
  batch 50 as in the released code. On CPU the default batch is 4 and only a couple of steps are
  timed so that a run ends in about a minute; the result says so (``note``).
* ``demo`` — the ``resnet-mini`` backbone on 32 px images (the CPU demo / built-in MNIST setting).

Training throughput is images/s through ``training_step`` + backward + optimiser step (AMP on
CUDA: bf16 where supported, else fp16 with loss scaling; fp32 elsewhere); encoding throughput is
images/s through ``encode`` (DSF codes). Peak memory: CUDA max allocated, or the process's peak RSS
on CPU (includes Python and torch themselves).

Results are merged into ``benchmarks/results/csce.json`` (keyed by set-up and device kind), written
atomically. Examples::

    python benchmarks/bench_csce.py --device cpu --setup paper --steps 2
    python benchmarks/bench_csce.py --device cpu --setup demo
    python benchmarks/bench_csce.py --device cuda --setup paper --batch 50 --steps 20
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bitseek.models.csce import CSCEConfig, CSCENet

# A sibling module, found because Python puts this script's folder on sys.path.
from _harness import machine_info, params_m, pick_device, read_previous, time_encoding, time_training, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "csce.json"

SETUPS: dict[str, dict[str, Any]] = {
    "paper": {"cfg": dict(bits=64, num_classes=100, backbone="resnet50", image_size=224, local_branch="aspp"),
              "batch": {"cuda": 50, "cpu": 4}, "encode_batch": {"cuda": 100, "cpu": 8}},
    "demo": {"cfg": dict(bits=32, num_classes=10, backbone="resnet-mini", image_size=32, local_branch="aspp",
                         aspp_dilations=[1, 2, 3]),
             "batch": {"cuda": 256, "cpu": 64}, "encode_batch": {"cuda": 512, "cpu": 256}},
}


def _batch(n: int, cfg: CSCEConfig, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return {"image": torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=g).to(device),
            "label": torch.eye(cfg.num_classes)[labels].to(device), "index": torch.arange(n, device=device)}


def bench_training(model: CSCENet, device: torch.device, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    data = _batch(batch, model.cfg, device)
    opt = torch.optim.RMSprop([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-5)
    return time_training(model, opt, lambda: model.training_step(data)["loss"], device,
                         batch=batch, steps=steps, warmup=warmup, unit="images")


def bench_encoding(model: CSCENet, device: torch.device, batch: int, steps: int) -> dict[str, Any]:
    data = _batch(batch, model.cfg, device)
    return time_encoding(model, lambda: model.encode(data), device, batch=batch, steps=steps,
                         expected_shape=(batch, model.bits), unit="images")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--setup", choices=sorted(SETUPS), default="paper")
    ap.add_argument("--batch", type=int, default=0, help="training batch (default: 50 on cuda, 4 on cpu for paper)")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--encode-batch", type=int, default=0)
    ap.add_argument("--encode-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    setup = SETUPS[args.setup]
    kind = "cuda" if device.type == "cuda" else "cpu"
    batch = args.batch or setup["batch"][kind]
    enc_batch = args.encode_batch or setup["encode_batch"][kind]
    torch.manual_seed(0)
    cfg = CSCEConfig(**setup["cfg"])
    model = CSCENet(cfg).to(device)
    paper_batch = 50 if args.setup == "paper" else None
    note = f"batch {batch}"
    if paper_batch and batch != paper_batch:
        note += f" (released code: {paper_batch}; smaller on {kind}, only {args.steps} timed steps)"

    result = {
        **machine_info(device),
        # other processes share the CPU: a high load average means the numbers are pessimistic
        "load_avg_1m_at_start": os.getloadavg()[0],
        "params_m": params_m(model),
        "windows": model.n_windows,
        "note": note,
        "train": bench_training(model, device, batch, args.steps, args.warmup),
        "encode": bench_encoding(model, device, enc_batch, args.encode_steps),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    existing = read_previous(args.out)
    doc = {"benchmark": "csce", "input": "synthetic images (B, 3, S, S), random class labels",
           "setups": {**existing.get("setups", {})}}
    entry = dict(doc["setups"].get(args.setup, {}))
    entry["model_config"] = asdict(cfg)
    entry["runs"] = {**entry.get("runs", {}), kind: result}
    doc["setups"][args.setup] = entry
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()
