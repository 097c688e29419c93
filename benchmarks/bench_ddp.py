"""DDP scaling on CPU: ConMH trained by the engine in 1 process and in 2 gloo ranks (torchrun).

Three runs of the same model and data, one thread per process, timed by the engine's own epoch clock
(``seconds`` of the last epoch record in ``log.jsonl``; the first epoch is a warm-up):

* ``single_B``: one process, batch B;
* ``single_2B``: one process, batch 2B (the global batch of the DDP run);
* ``ddp_2x_B``: two ranks, batch B each (global 2B) -- the run that equals ``single_2B`` step for step.

Reported: clips/s of each, **strong-scaling speed-up** ``ddp_2x_B / single_2B`` (same global batch,
ideal 2.0), and **weak-scaling efficiency** ``ddp_2x_B / (2 * single_B)`` (same per-rank work, ideal
1.0). On a 2-core machine shared with other jobs, read them as this run's ratios. ``--device cuda``
with ``--nproc N`` measures GPUs where there are some (not run here).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_ddp.py [--n 512] [--batch 32] [--epochs 2]``.
Writes ``benchmarks/results/ddp.json`` atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import machine_info, write_results  # type: ignore[import-not-found]

OUT = Path(__file__).parent / "results" / "ddp.json"

WORKER = r'''
import json, sys
import numpy as np, torch
from torch.utils.data import Dataset
from bitseek.config import load_config
from bitseek.data.base import RetrievalData
from bitseek.registry import create_model
from bitseek.train import dist
from bitseek.train.engine import Trainer, seed_everything

class Feats(Dataset):
    def __init__(self, x): self.x = torch.from_numpy(x)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {"feats": self.x[i]}

out, n, batch, epochs, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(1)
x = np.random.default_rng(0).standard_normal((n, 25, 256)).astype(np.float32)
raw = {"name": "bench-ddp", "model": {"name": "conmh", "bits": 64, "feature_dim": 256, "max_frames": 25,
       "hidden_size": 128, "depth": 2, "heads": 4, "decoder_dim": 128, "decoder_depth": 1, "decoder_heads": 4},
       "data": {"name": "video-features", "batch_size": batch}, "optim": {"lr": 0.001},
       "train": {"epochs": epochs, "out_dir": out, "progress": False, "device": device, "log_every": 1000}}
with dist.process_group():
    cfg = load_config(raw=raw)
    seed_everything(0)
    Trainer(create_model(cfg.model), cfg, RetrievalData(Feats(x), Feats(x[:8]), None, np.zeros(8), None)).fit()
'''


def run(tmp: Path, name: str, nproc: int, n: int, batch: int, epochs: int, device: str) -> dict[str, Any]:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    out = tmp / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(out), str(n), str(batch), str(epochs), device]
    cmd = [sys.executable, str(script), *args] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(script), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    epochs_rec = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"event": "epoch"' in x]
    secs = float(epochs_rec[-1]["seconds"])  # the last epoch: the first one warms up
    return {"processes": nproc, "batch_per_process": batch, "global_batch": batch * nproc, "epoch_seconds": secs,
            "clips_per_s": n / secs, "last_epoch_loss": epochs_rec[-1].get("train/loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="training clips (25 frames x 256 features)")
    ap.add_argument("--batch", type=int, default=32, help="B: per-process batch of the DDP run")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bitseek-ddp-") as t:
        tmp = Path(t)
        single_b = run(tmp, "single_B", 1, args.n, args.batch, args.epochs, args.device)
        single_2b = run(tmp, "single_2B", 1, args.n, args.batch * args.nproc, args.epochs, args.device)
        ddp = run(tmp, "ddp", args.nproc, args.n, args.batch, args.epochs, args.device)
    result = {"single_B": single_b, "single_2B": single_2b, f"ddp_{args.nproc}x_B": ddp,
              "strong_scaling_speedup": ddp["clips_per_s"] / single_2b["clips_per_s"],
              "weak_scaling_efficiency": ddp["clips_per_s"] / (args.nproc * single_b["clips_per_s"]),
              "ddp_loss_equals_single_2B": abs((ddp["last_epoch_loss"] or 0) - (single_2b["last_epoch_loss"] or 0))
              <= 1e-4 * abs(single_2b["last_epoch_loss"] or 1)}
    import torch

    doc = {"benchmark": "ddp", "machine": machine_info(torch.device(args.device)), "args": vars(args), **result}
    write_results(OUT, doc, result)
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
