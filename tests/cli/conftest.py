"""A tiny real-format video dataset and a trained 16-bit ConMH run for CLI tests (module-scoped: trained once)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from bitseek.cli.main import main

N_TRAIN, N_QUERY, N_DB, T, D, C = 48, 10, 40, 8, 16, 5


def _feats(path: Path, n: int, seed: int) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=np.random.default_rng(seed).standard_normal((n, T, D)).astype(np.float32))


def _labels(path: Path, n: int, seed: int) -> None:
    lab = np.zeros((n, C))
    lab[np.arange(n), np.random.default_rng(seed).integers(0, C, n)] = 1
    scipy.io.savemat(path, {"labels": lab})


def write_video_config(root: Path, run: Path, epochs: int = 2) -> Path:
    """A tiny real-format SSVH dataset (HDF5 + .mat) and a 16-bit ConMH config over it."""
    root.mkdir(parents=True, exist_ok=True)
    _feats(root / "train.h5", N_TRAIN, 1)
    _feats(root / "q.h5", N_QUERY, 2)
    _feats(root / "db.h5", N_DB, 3)
    _labels(root / "ql.mat", N_QUERY, 4)
    _labels(root / "dbl.mat", N_DB, 5)
    cfg = {
        "name": "tiny",
        "model": {"name": "conmh", "bits": 16, "feature_dim": D, "max_frames": T, "hidden_size": 32, "depth": 1,
                  "heads": 2, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
        "data": {"name": "video-features", "root": str(root), "batch_size": 16, "train_files": ["train.h5"],
                 "query_files": ["q.h5"], "db_files": ["db.h5"], "query_labels": ["ql.mat"],
                 "db_labels": ["dbl.mat"]},
        "optim": {"lr": 0.001},
        "train": {"epochs": epochs, "out_dir": str(run), "progress": False, "device": "cpu", "seed": 3},
        "eval": {"ks": [5, 10]},
    }
    path = root / "tiny.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    cfg = write_video_config(base / "data", base / "run")
    assert main(["train", "--config", str(cfg)]) == 0
    return base


@pytest.fixture()
def run(trained, tmp_path):
    """A private copy of the trained run and its data (tests damage it)."""
    shutil.copytree(trained, tmp_path / "t")
    base = tmp_path / "t"
    cfg = base / "data" / "tiny.yaml"
    text = cfg.read_text().replace(str(trained), str(base))
    cfg.write_text(text)
    return base, cfg
