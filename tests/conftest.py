"""A toy model and dataset registered for engine tests (tiny, deterministic)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from bitseek.data.base import RetrievalData
from bitseek.models.base import HashModel
from bitseek.registry import DATASETS, MODELS, register_dataset, register_model


@dataclass
class ToyModelConfig:
    name: str = "toy-model"
    bits: int = 8
    dim: int = 6
    nan_after: int = 0  # produce a NaN loss after this many steps (0 = never)


class ToyModel(HashModel):
    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        self.bits = cfg.bits
        self.cfg = cfg
        self.enc = nn.Linear(cfg.dim, cfg.bits)
        self.dec = nn.Linear(cfg.bits, cfg.dim)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.phases_seen: list[tuple[int, str]] = []

    def training_step(self, batch, phase="train"):
        x = batch["feats"].mean(1)
        h = torch.tanh(self.enc(x))
        recon = ((self.dec(h) - x) ** 2).mean()
        self.steps += 1
        loss = recon
        if self.cfg.nan_after and int(self.steps) > self.cfg.nan_after:
            loss = loss * float("nan")
        self.phases_seen.append((-1, phase))
        return {"loss": loss, "recon": recon.detach()}

    @torch.no_grad()
    def encode(self, batch):
        return torch.sign(self.enc(batch["feats"].mean(1)))

    def epoch_phases(self, epoch):
        return ["a", "b"] if epoch % 2 else ["a"]


@dataclass
class ToyDataConfig:
    name: str = "toy-data"
    root: str = ""
    batch_size: int = 8
    n: int = 40


class ToyFeats(Dataset):
    def __init__(self, x: np.ndarray) -> None:
        self.x = torch.from_numpy(x)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"feats": self.x[i], "index": i}


if "toy-model" not in MODELS._entries:
    register_model("toy-model", ToyModelConfig)(ToyModel)

    @register_dataset("toy-data", ToyDataConfig)
    def _toy_data(cfg: ToyDataConfig) -> RetrievalData:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((cfg.n, 3, 6)).astype(np.float32)
        labels = rng.integers(0, 3, cfg.n)
        return RetrievalData(ToyFeats(x), ToyFeats(x[:10]), ToyFeats(x), labels[:10], labels)


@pytest.fixture()
def toy_raw(tmp_path):
    return {
        "name": "toy",
        "model": {"name": "toy-model"},
        "data": {"name": "toy-data"},
        "optim": {"name": "adam", "lr": 0.01, "schedule": "step", "step_size": 1, "gamma": 0.5},
        "train": {"epochs": 3, "out_dir": str(tmp_path / "run"), "progress": False, "log_every": 1},
    }
