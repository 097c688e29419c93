"""The engine's DDP path on CPU: two gloo ranks launched by torchrun, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = r'''
import json, os, sys
import numpy as np, torch
from torch.utils.data import Dataset
from bitseek.config import load_config
from bitseek.data.base import RetrievalData
from bitseek.registry import create_model
from bitseek.train.engine import Trainer

class Feats(Dataset):
    def __init__(self, x): self.x = torch.from_numpy(x)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {"feats": self.x[i], "index": i}

out = sys.argv[1]
rank = int(os.environ["RANK"])
x = np.random.default_rng(0).standard_normal((64, 4, 8)).astype(np.float32)
raw = {"name": "ddp", "model": {"name": "conmh", "bits": 8, "feature_dim": 8, "max_frames": 4, "hidden_size": 16,
       "depth": 1, "heads": 2, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
       "data": {"name": "video-features", "batch_size": 8},
       "optim": {"lr": 0.001}, "train": {"epochs": 2, "out_dir": out, "progress": False, "device": "cpu",
       "log_every": 1}}
cfg = load_config(raw=raw)
torch.manual_seed(0)
model = create_model(cfg.model)
data = RetrievalData(Feats(x), Feats(x[:8]), None, np.zeros(8), None)
local = []

class Recording(Trainer):
    def _epoch_means(self, sums, count):
        local.append({k: float(v) / count for k, v in sums.items()})
        return super()._epoch_means(sums, count)

trainer = Recording(model, cfg, data)
ordered = [int(i) for b in trainer._epoch_context(0).batches(shuffle=False) for i in b["index"]]
trainer.fit()
digest = float(sum(p.double().sum() for p in model.parameters()))
json.dump({"rank": rank, "world": trainer.world, "ordered": ordered, "local": local, "digest": digest,
           "group_alive": torch.distributed.is_initialized()}, open(os.path.join(out, f"rank{rank}.json"), "w"))
'''


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_gloo_ranks_train_in_sync_and_log_global_means(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), str(run)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((run / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["world"] for x in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # gradients were averaged: identical weights
    assert not any(x["group_alive"] for x in ranks)
    assert ranks[0]["ordered"] + ranks[1]["ordered"] == list(range(64))  # k-means input: each item once, in order  # the trainer made the group, so it destroyed it
    epochs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in x]
    epochs = [e for e in epochs if e["event"] == "epoch"]
    assert len(epochs) == 2
    for e, rec in enumerate(epochs):
        a, b = ranks[0]["local"][e]["loss"], ranks[1]["local"][e]["loss"]
        assert a != b  # each rank saw its own shard
        assert rec["train/loss"] == pytest.approx((a + b) / 2, rel=1e-6)  # the log is the global mean
    assert (run / "DONE").exists() and (run / "model" / "config.json").exists()
