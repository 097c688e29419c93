"""What half-precision encoding does to codes: bits flipped by bf16 autocast against fp32.

Trains the demo's ConMH preset on the built-in Moving-MNIST video benchmark (real SSVH-format
files, built on first use), encodes queries and database in fp32 and under autocast, and reports
the fraction of code entries that change, the share of videos with at least one change, and
mAP@20 both ways. The same for the untrained (random-init) model, whose margins are smaller.

    OMP_NUM_THREADS=1 python benchmarks/bench_amp_codes.py --out benchmarks/results/amp_codes.json

On a GPU pass ``--device cuda`` (bf16 and fp16 are both measured there); on a CPU only bf16
autocast exists for these layers. The result is a JSON file; docs/protocols.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitseek import pipeline
from bitseek.atomic import atomic_write_text
from bitseek.data.base import load_data
from bitseek.demo.common import deep_config, shallow_config
from bitseek.encode import encode_dataset
from bitseek.eval import map_at_k
from bitseek.registry import create_model

DATASET = "mnist-video"


def compare(model: Any, data: Any, device: str, precisions: list[str]) -> dict[str, Any]:
    ref_q = encode_dataset(model, data.query, 256, device, precision="fp32")
    ref_d = encode_dataset(model, data.searched, 256, device, precision="fp32")
    ql, dl = data.query_labels, data.searched_labels
    out: dict[str, Any] = {"fp32": {"mAP@20": map_at_k(ref_q, ref_d, ql, dl, ks=[20])[20]}}
    for p in precisions:
        q = encode_dataset(model, data.query, 256, device, precision=p)
        d = encode_dataset(model, data.searched, 256, device, precision=p)
        ref = np.concatenate([ref_q, ref_d])
        got = np.concatenate([q, d])
        changed = ref != got
        out[p] = {
            "entries_changed": float(changed.mean()),
            "items_with_a_change": float(changed.any(axis=1).mean()),
            "zeros_fp32": float((ref == 0).mean()),
            "zeros_amp": float((got == 0).mean()),
            "mAP@20": map_at_k(q, d, ql, dl, ks=[20])[20],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/amp_codes.json")
    ap.add_argument("--work", default="amp-bench", help="folder for the benchmark data and the run")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work).resolve()
    precisions = ["bf16"] if args.device == "cpu" else ["bf16", "fp16"]
    data_opts = {"root": str(work / "data"), "seed": args.seed}
    data = load_data(shallow_config("itq", args.bits, DATASET, work, data_opts, args.seed).data)
    info = data.info
    cfg = deep_config("conmh-mnist-video.yaml", "conmh", args.bits, DATASET, work,
                      [f"model.feature_dim={info['feature_dim']}", f"model.max_frames={info['frames']}",
                       f"train.device={args.device}", "train.progress=false",
                       *(f"data.{k}={v}" for k, v in data_opts.items())], args.seed)
    torch.manual_seed(args.seed)
    untrained = create_model(cfg.model)
    t0 = time.perf_counter()
    model, _ = pipeline.train(cfg, data)
    train_s = time.perf_counter() - t0
    result = {
        "benchmark": DATASET,
        "model": "conmh (demo preset)",
        "bits": args.bits,
        "device": args.device,
        "epochs": cfg.train.epochs,
        "train_seconds": round(train_s, 1),
        "query": len(data.query),
        "database": len(data.searched),
        "trained": compare(model, data, args.device, precisions),
        "untrained": compare(untrained, data, args.device, precisions),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_amp_codes.py",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
