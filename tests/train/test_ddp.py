"""DDP computes what one process computes: two gloo ranks under torchrun against one process, on CPU.

Same global batch (2 ranks x 8 = 1 process x 16), same seeds: the data order is the single process's by
construction (dist.global_batches), the frame masks and WSCH's k-means seed come from the shared
generator, DCL sees the gathered global batch. What may differ is float summation order (8 + 8 rows
against 16, the gradient all-reduce). The models run in float64 so that this noise cannot flip a binary
code; the losses (computed in float32 inside DCL/MSE) agree to rel 1e-6 (measured 1.2e-7) and the
weights to 1e-7 absolute (measured 7.5e-9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitseek.train.checkpoint import load_model

SRC = Path(__file__).resolve().parents[2] / "src"

WORKER = r'''
import json, os, sys
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
    def __getitem__(self, i): return {"feats": self.x[i], "index": i}

class Stop(Exception):
    pass

class Stopping(Trainer):
    """Dies right after the checkpoint of epoch STOP (every rank), as a killed job would."""
    def _end_of_epoch(self, last_epoch):
        super()._end_of_epoch(last_epoch)
        if self.epoch == int(os.environ.get("STOP", "0")):
            raise Stop()

MODELS = {
    "conmh": ({"name": "conmh", "bits": 8, "feature_dim": 8, "max_frames": 8, "hidden_size": 16, "depth": 1,
               "heads": 2, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}, 2, (64, 8, 8)),
    "wsch": ({"name": "wsch", "bits": 16, "feature_dim": 24, "max_frames": 10, "hidden_size": 32,
              "decoder_size": 32, "headdim": 16, "d_state": 4, "heads": 4, "n_clusters": 6,
              "pretrain_epochs": 1, "kmeans_niter": 5}, 3, (60, 10, 24)),
}

root, batch = sys.argv[1], int(sys.argv[2])
# float64: binary codes round at a threshold, so float32 summation-order noise (8 + 8 rows vs 16) would
# flip an occasional bit and the runs would part; in float64 the noise is far below any threshold
torch.set_default_dtype(torch.float64)
with dist.process_group():
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    for name, (model_cfg, epochs, shape) in MODELS.items():
        out = os.path.join(root, name)
        x = np.random.default_rng(0).standard_normal(shape)
        raw = {"name": "ddp-" + name, "model": model_cfg, "data": {"name": "video-features", "batch_size": batch},
               "optim": {"lr": 0.003}, "train": {"epochs": epochs, "out_dir": out, "progress": False,
               "device": "cpu", "log_every": 1, "seed": 3}}
        cfg = load_config(raw=raw)
        seed_everything(cfg.train.seed)
        model = create_model(cfg.model)
        data = RetrievalData(Feats(x), Feats(x[:8]), None, np.zeros(8), None)
        try:
            Stopping(model, cfg, data).fit()
        except Stop:
            pass
        with open(os.path.join(out, f"world{world}-rank{dist.collective.rank()}.json"), "w") as fh:
            json.dump({"world": world}, fh)
# one write per rank: two ranks share the pipe, and print's separate pieces could interleave
sys.stdout.write(f"group alive after the launcher: {torch.distributed.is_initialized()}\n")
sys.stdout.flush()
'''


def _run(tmp: Path, out: Path, world: int, stop: int = 0) -> str:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "STOP": str(stop)}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    if world == 1:
        cmd = [sys.executable, str(script), str(out), "16"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
               str(script), str(out), str(16 // world)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout


def _records(run: Path, event: str) -> list[dict]:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in load_model(run / "model").state_dict().items()}


LOSS_KEYS = {"conmh": ("loss", "recon", "dcl"), "wsch": ("loss", "recon", "cluster", "contrastive")}


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_gloo_ranks_equal_one_process_and_resume(tmp_path):
    single, ddp, resumed = tmp_path / "single", tmp_path / "ddp", tmp_path / "resumed"
    _run(tmp_path, single, 1)
    out = _run(tmp_path, ddp, 2)
    assert "group alive after the launcher: False" in out  # the launcher destroyed the group it opened
    _run(tmp_path, resumed, 2, stop=2)  # conmh: killed after its 2nd (last) epoch; wsch: after epoch 2 of 3
    for name in ("conmh", "wsch"):
        assert (ddp / name / "world2-rank0.json").exists() and (ddp / name / "world2-rank1.json").exists()
        one, two = _records(single / name, "step"), _records(ddp / name, "step")
        assert len(one) == len(two) > 0
        for a, b in zip(one, two):
            assert (a["step"], a["phase"]) == (b["step"], b["phase"])
            for key in LOSS_KEYS[name]:
                if key in a:
                    assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (name, a["step"], key)
        for a, b in zip(_records(single / name, "epoch"), _records(ddp / name, "epoch")):
            for key in a:
                if "/" in key:  # the epoch means are over every rank's steps
                    assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (name, key)
        w1, w2 = _weights(single / name), _weights(ddp / name)
        assert w1.keys() == w2.keys()
        for k in w1:
            assert torch.allclose(w1[k], w2[k], rtol=0, atol=1e-7), (name, k, float((w1[k] - w2[k]).abs().max()))
    # wsch was interrupted after a k-means cycle: resuming under DDP finishes it as the uninterrupted run
    assert not (resumed / "wsch" / "DONE").exists()
    _run(tmp_path, resumed, 2)
    assert [r["epoch"] for r in _records(resumed / "wsch", "resume")] == [2]
    w2, w3 = _weights(ddp / "wsch"), _weights(resumed / "wsch")
    for k in w2:
        assert torch.equal(w2[k], w3[k]), k  # same ranks, same order, same RNG streams: bit for bit
    steps = {r["step"]: r["loss"] for r in _records(resumed / "wsch", "step")}
    assert steps == {r["step"]: r["loss"] for r in _records(ddp / "wsch", "step")}
