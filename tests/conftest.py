"""Shared test fixtures: a toy model and dataset registered per test, and the shared fixture folder.

The toy entries go through the registry's scoped registration, so no test leaves anything behind in
the global registries. Data that cannot live in the repository (the real revisitop ground truth) is
found in the ``shared`` folder beside the repository root, or wherever ``BITSEEK_SHARED`` points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from bitseek.data.base import RetrievalData
from bitseek.models.base import HashModel
from bitseek.registry import DATASETS, MODELS


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


def build_toy_model(cfg: ToyModelConfig) -> ToyModel:
    return ToyModel(cfg)


def build_toy_data(cfg: ToyDataConfig) -> RetrievalData:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg.n, 3, 6)).astype(np.float32)
    labels = rng.integers(0, 3, cfg.n)
    return RetrievalData(ToyFeats(x), ToyFeats(x[:10]), ToyFeats(x), labels[:10], labels)


@pytest.fixture(autouse=True)
def toy_entries() -> Iterator[None]:
    """``toy-model`` and ``toy-data`` exist for the duration of each test, and only then."""
    with MODELS.registered("toy-model", build_toy_model, ToyModelConfig), \
            DATASETS.registered("toy-data", build_toy_data, ToyDataConfig):
        yield


@pytest.fixture()
def toy_raw(tmp_path):
    return {
        "name": "toy",
        "model": {"name": "toy-model"},
        "data": {"name": "toy-data"},
        "optim": {"name": "adam", "lr": 0.01, "schedule": "step", "step_size": 1, "gamma": 0.5},
        "train": {"epochs": 3, "out_dir": str(tmp_path / "run"), "progress": False, "log_every": 1},
    }


# --------------------------------------------------------------------------- the shared folder

REPO_ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def shared_dir() -> tuple[Path, str]:
    """The shared folder and how it was found: ``$BITSEEK_SHARED``, else ``<repo>/../shared``."""
    env = os.environ.get("BITSEEK_SHARED")
    if env:
        return Path(env).expanduser().resolve(), "BITSEEK_SHARED"
    return (REPO_ROOT.parent / "shared").resolve(), "<repo>/../shared"


def shared_fixture(*parts: str) -> Path:
    """A file under ``<shared>/fixtures``; skip (with the path in the reason) only when it is absent.

    When ``BITSEEK_SHARED`` is set the caller asked for the fixtures explicitly, so a missing file
    there is a failure, not a skip.
    """
    root, how = shared_dir()
    path = root.joinpath("fixtures", *parts)
    if path.is_file():
        return path
    if how == "BITSEEK_SHARED":
        pytest.fail(f"{path} is missing, but BITSEEK_SHARED={root} was set to provide it")
    pytest.skip(f"shared fixture {path} is absent (put the shared folder beside the repository or set BITSEEK_SHARED)")


@pytest.fixture(scope="session")
def shared_fixture_path() -> Callable[..., Path]:
    return shared_fixture


def _shared_state() -> str:
    root, how = shared_dir()
    state = "found" if (root / "fixtures").is_dir() else "ABSENT: the tests that need them are skipped"
    return f"bitseek shared fixtures ({how}): {root / 'fixtures'} {state}"


def pytest_report_header(config: pytest.Config) -> str:
    return _shared_state()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say so at the end of every run (also under ``-q``) when the shared fixtures are missing."""
    root, _ = shared_dir()
    if not (root / "fixtures").is_dir():
        terminalreporter.write_line(_shared_state(), yellow=True)
