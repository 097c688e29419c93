"""Refusals before any work (issue 11 item 9), empty overrides and overrides anywhere (item 15),
packaged recipes by name (item 18), non-UTF-8 and cyclic YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from bitseek.cli.main import main, parse_args
from bitseek.config import load_config, load_yaml, resolve_config_path
from bitseek.errors import ConfigError

RAW = {"name": "exp", "model": {"name": "toy-model", "bits": 16}, "data": {"name": "toy-data"}}


@pytest.mark.parametrize("override, message", [
    ("model.bits=12", "model.bits: .*multiple of 8.*got 12"),
    ("model.bits=4", "model.bits: .*multiple of 8.*got 4"),
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("train.epochs=-3", "train.epochs: must be >= 1, got -3"),
    ("optim.lr=nan", "optim.lr: must be a finite number >= 0, got nan"),
    ("optim.lr=-0.1", "optim.lr: must be a finite number >= 0, got -0.1"),
    ("optim.lr=.inf", "optim.lr: must be a finite number"),
    ("optim.betas=[0.9]", "optim.betas: needs two numbers"),
    ("optim.betas=[0.9,0.99,0.999]", "optim.betas: needs two numbers"),
    ("optim.betas=[0.9,1.5]", "optim.betas: needs two numbers in \\[0, 1\\)"),
    ("train.num_workers=-1", "train.num_workers: must be >= 0, got -1"),
    ("train.seed=18446744073709551616", "train.seed: must be in 0..4294967295"),
    ("train.seed=-1", "train.seed: must be in 0.."),
    ("train.device=gpu", "train.device: 'gpu' is not a device"),
    ("train.precision=fp8", "train.precision: unknown value 'fp8'"),
    ("optim.name=adamm", "optim.name: unknown optimiser 'adamm'; did you mean 'adam'"),
    ("eval.batch_size=0", "eval.batch_size: must be >= 1"),
])
def test_values_that_cannot_work_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(raw=dict(RAW), overrides=[override])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_a_device_this_machine_does_not_have_is_refused(device):
    with pytest.raises(ConfigError, match=f"train.device={device}: this machine has no CUDA device"):
        load_config(raw=dict(RAW), overrides=[f"train.device={device}"])
    # building the config for another machine stays possible
    assert load_config(raw=dict(RAW), overrides=[f"train.device={device}"], check_machine=False).train.device == device


def test_cuda_count_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert load_config(raw=dict(RAW), overrides=["train.device=cuda:1"]).train.device == "cuda:1"
    assert load_config(raw=dict(RAW), overrides=["train.device=cuda"]).train.device == "cuda"
    with pytest.raises(ConfigError, match="has 2 CUDA device\\(s\\), cuda:0..cuda:1"):
        load_config(raw=dict(RAW), overrides=["train.device=cuda:7"])


def test_gpu_flag_on_a_cpu_machine_is_one_line_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(RAW))
    assert main(["train", "--config", str(cfg), "--gpu", "0", f"train.out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_empty_override_is_empty_not_none():
    from bitseek.config.experiment import ExperimentConfig

    cfg = load_config(raw=dict(RAW), overrides=["train.out_dir=", "eval.checkpoint=", "eval.ks=[5]"])
    assert cfg.train.out_dir == "" and cfg.eval.checkpoint == ""
    assert isinstance(cfg, ExperimentConfig)
    # a YAML `key:` with no value is the same empty string
    raw = {**RAW, "train": {"out_dir": None}}
    assert load_config(raw=raw).train.out_dir == ""
    with pytest.raises(ConfigError, match="expected an integer, got ''"):
        load_config(raw=dict(RAW), overrides=["train.epochs="])


def test_overrides_anywhere_on_the_line():
    a = parse_args(["eval", "--config", "x.yaml", "data.root=d", "--checkpoint", "ck", "eval.ks=5,10",
                    "--out", "ev", "TRAIN.EPOCHS", "3"])
    assert a.overrides == ["data.root=d", "eval.ks=5,10", "TRAIN.EPOCHS", "3"]
    assert a.checkpoint == "ck" and a.out == "ev"
    b = parse_args(["train", "a.b=1", "--cfg", "x.yaml", "c.d="])
    assert b.config == "x.yaml" and b.overrides == ["a.b=1", "c.d="]


def test_unknown_option_is_the_subcommands_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["train", "--cfg", "x.yaml", "--weights", "w.pth"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: bitseek train" in err and "unrecognized arguments: --weights" in err


def test_packaged_recipes_resolve_without_a_clone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    path = resolve_config_path("conmh/fcvid-64")
    assert path.is_file() and path.parts[-3:] == ("configs", "conmh", "fcvid-64.yaml")
    assert "bitseek" in path.parts
    assert resolve_config_path("configs/itq/fcvid-64.yaml").is_file()
    cfg = load_config("conmh/fcvid-64")
    assert cfg.model.name == "conmh" and cfg.model.bits == 64
    with pytest.raises(ConfigError, match="did you mean 'conmh/fcvid-64'"):
        resolve_config_path("conmh/fcvid-46")


def test_yaml_that_is_not_utf8_or_cycles(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_yaml(bad)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("_base_: b.yaml\nname: a\n")
    b.write_text("_base_: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_yaml(a)
    c = tmp_path / "c.yaml"
    c.write_text("_base_: missing.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file .*missing.yaml does not exist"):
        load_yaml(c)


def test_every_packaged_recipe_loads():
    from bitseek.config.experiment import packaged_configs

    root = packaged_configs()
    recipes = sorted(p for p in root.rglob("[!_]*.yaml"))
    assert len(recipes) >= 36
    for p in recipes:
        cfg = load_config(p)
        assert cfg.name and Path(p).is_file()


def test_cuda_means_the_current_cuda_device(monkeypatch):
    """`train.device=cuda` resolves to an indexed device, so `torch.cuda.set_device` accepts it."""
    from bitseek.train.engine import resolve_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    dev = resolve_device("cuda")
    assert dev.type == "cuda" and dev.index == 3
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda").index == 1
