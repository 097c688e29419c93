from __future__ import annotations

import pytest
import yaml

from bitseek.config import apply_overrides, load_config, save_resolved
from bitseek.errors import ConfigError

from bitseek.registry import MODELS

# toy-model / toy-data are registered by tests/conftest.py

RAW = {"name": "exp", "model": {"name": "toy-model", "bits": 16}, "data": {"name": "toy-data"}}


def test_yaml_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**RAW, "optim": {"lr": 0.1}}))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"_base_": "base.yaml", "train": {"epochs": 7}}))
    cfg = load_config(child, ["optim.lr=1e-4", "model.bits=32", "eval.ks=[5,20]", "train.progress=false"])
    assert isinstance(cfg.model, MODELS.get("toy-model").config_cls) and cfg.model.bits == 32
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.train.epochs == 7
    assert cfg.eval.ks == [5, 20] and cfg.train.progress is False
    out = save_resolved(cfg, tmp_path / "run")
    again = load_config(out)
    assert again == cfg


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(raw=dict(RAW), overrides=["train.epocs=3"])
    with pytest.raises(ConfigError, match="did you mean 'bits'"):
        load_config(raw=dict(RAW), overrides=["model.bitz=3"])
    with pytest.raises(ConfigError, match="unknown model 'toy-modle'; did you mean 'toy-model'"):
        load_config(raw={**RAW, "model": {"name": "toy-modle"}})
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(raw={**RAW, "trian": {}})


def test_bad_values():
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(raw=dict(RAW), overrides=["train.epochs=many"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="missing required section 'data'"):
        load_config(raw={"name": "x", "model": {"name": "toy-model"}})
