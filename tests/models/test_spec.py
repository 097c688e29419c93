"""Input specs (issue 10 item 7): checked against the data before training, or filled from `auto`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from bitseek import pipeline
from bitseek.config import load_config
from bitseek.data.base import RetrievalData
from bitseek.errors import ConfigError
from bitseek.models.spec import resolve_input_spec
from bitseek.registry import DATASETS, MODELS


class _Clips(Dataset):
    def __init__(self, x: np.ndarray) -> None:
        self.x = torch.from_numpy(x)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"feats": self.x[i], "index": i}


@dataclasses.dataclass
class _ClipsConfig:
    name: str = "spec-clips"
    frames: int = 6
    dim: int = 12
    batch_size: int = 8


def _clips(cfg: _ClipsConfig) -> RetrievalData:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, cfg.frames, cfg.dim)).astype(np.float32)
    labels = np.eye(3)[rng.integers(0, 3, 24)]
    return RetrievalData(_Clips(x), _Clips(x[:6]), _Clips(x), labels[:6], labels,
                         info={"frames": cfg.frames, "feature_dim": cfg.dim})


@pytest.fixture()
def clips():
    with DATASETS.registered("spec-clips", _clips, _ClipsConfig):
        yield


def _raw(tmp_path, **model):
    return {"name": "spec", "model": {"name": "conmh", "bits": 8, "hidden_size": 16, "transformer_type": "",
                                      "depth": 1, "heads": 2, "decoder_dim": 8, "decoder_depth": 1,
                                      "decoder_heads": 2, **model},
            "data": {"name": "spec-clips"},
            "train": {"epochs": 1, "out_dir": str(tmp_path / "run"), "progress": False, "max_steps_per_epoch": 1}}


def test_mismatched_feature_dim_is_refused_before_training_naming_both_values(tmp_path, clips):
    cfg = load_config(raw=_raw(tmp_path, feature_dim=4096, max_frames=25))
    with pytest.raises(ConfigError, match=r"model.feature_dim=4096 does not fit the data: data.feature_dim is 12"):
        pipeline.train(cfg)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_too_few_positions_for_the_data_frames_is_refused(tmp_path, clips):
    cfg = load_config(raw=_raw(tmp_path, feature_dim=12, max_frames=4))
    with pytest.raises(ConfigError, match=r"model.max_frames=4 .* is 6; set model.max_frames=6 or more"):
        pipeline.train(cfg)


def test_auto_is_filled_from_the_data_and_saved_resolved(tmp_path, clips):
    cfg = load_config(raw=_raw(tmp_path, feature_dim="auto", max_frames="auto"))
    assert cfg.model.feature_dim == 0 and cfg.model.max_frames == 0
    model, _ = pipeline.train(cfg)
    assert model.cfg.feature_dim == 12 and model.cfg.max_frames == 6
    assert "feature_dim: 12" in (tmp_path / "run" / "config.yaml").read_text()


def test_auto_model_cannot_be_built_unresolved():
    cfg = MODELS.config("conmh", feature_dim="auto")
    with pytest.raises(ConfigError, match="model.feature_dim=auto is filled from the data"):
        MODELS.create(cfg)


def test_csce_image_size_agrees_with_the_data_config():
    data_cfg = DATASETS.config("image-folder", root="x", image_size=64)
    cfg = MODELS.config("csce", image_size=224)
    with pytest.raises(ConfigError, match="model.image_size=224 does not fit the data: data.image_size is 64"):
        resolve_input_spec(cfg, {}, data_cfg)
    assert resolve_input_spec(MODELS.config("csce", image_size="auto"), {}, data_cfg).image_size == 64
