"""Layering (issue 10 item 4): models import nothing from train/, never open files, and every model with
a released checkpoint layout converts through the registry (CSCE-Net included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import bitseek
from bitseek.cli.main import main
from bitseek.errors import FileFormatError
from bitseek.registry import CONVERTERS, MODELS, create_model
from bitseek.weights import read_model_weights

MODELS_DIR = Path(bitseek.__file__).parent / "models"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_nothing_under_models_imports_train():
    offenders = {str(p.relative_to(MODELS_DIR)): sorted(m for m in _imports(p) if m.startswith("bitseek.train"))
                 for p in MODELS_DIR.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_model_loads_no_training_engine():
    code = ("import sys; from bitseek.registry import MODELS; MODELS.names(); "
            "bad = sorted(m for m in sys.modules if m.startswith('bitseek.train')); assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_csce_model_never_opens_its_weights_file(tmp_path):
    """The model is built without touching ``weights``; create_model reads it through bitseek.weights."""
    missing = tmp_path / "resnet-mini.pth"
    cfg = MODELS.config("csce", bits=16, num_classes=4, backbone="resnet-mini", image_size=32,
                        local_branch="attention", weights=str(missing))
    model = MODELS.create(cfg)  # the factory alone reads nothing
    assert model.pretrained_sources() == {"backbone": str(missing)}
    with pytest.raises(FileFormatError, match="resnet-mini.pth"):
        create_model(cfg)
    sd = {k: v.clone() + 1.0 if v.is_floating_point() else v for k, v in model.backbone.state_dict().items()}
    torch.save(sd, missing)
    loaded = create_model(cfg)
    for k, v in loaded.backbone.state_dict().items():
        torch.testing.assert_close(v, sd[k].to(v.dtype))


def test_checkpoint_of_a_pretrained_csce_reloads_without_the_backbone_file(tmp_path):
    from bitseek.train.checkpoint import load_model
    from bitseek.weights import save_model

    w = tmp_path / "w.pth"
    cfg = MODELS.config("csce", bits=16, num_classes=4, backbone="resnet-mini", image_size=32,
                        local_branch="attention", weights=str(w))
    torch.save(MODELS.create(cfg).backbone.state_dict(), w)
    model = create_model(cfg)
    save_model(tmp_path / "model", model, cfg)
    w.unlink()  # the checkpoint holds every weight; the generic loader needs no CSCE special case
    again = load_model(tmp_path / "model")
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])


def test_every_converter_belongs_to_a_registered_model_and_lives_beside_it():
    def home(module: str) -> str:  # the model's file, or its package (models/cvnet/)
        return ".".join(module.split(".")[:3])

    for name in CONVERTERS.names():
        assert name in MODELS
        assert home(CONVERTERS.get(name).module) == home(MODELS.get(name).factory.__module__)


def test_bitseek_convert_imports_a_released_csce_checkpoint(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_csce_reference import _mini_reference, with_sequential_duplicates
    finally:
        sys.path.pop(0)
    released = with_sequential_duplicates(_mini_reference(bits=16, classes=4))
    src = tmp_path / "csce_imagenet_16.pth"
    torch.save({"state_dict": {f"module.{k}": v.float() for k, v in released.items()}}, src)
    cfg = {"name": "csce-mini", "model": {"name": "csce", "bits": 16, "num_classes": 4, "backbone": "resnet-mini",
                                          "image_size": 32, "local_branch": "attention",
                                          "backbone_args": {"widths": [8, 16, 32, 64], "blocks": [1, 1, 1, 1]}},
           "data": {"name": "toy-data"}}
    path = tmp_path / "csce.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["convert", "--config", str(path), "--src", str(src), "--out", str(tmp_path / "ckpt")]) == 0
    weights = read_model_weights(tmp_path / "ckpt")
    torch.testing.assert_close(weights["hash_fc.weight"], released["fc.weight"].float())
    torch.testing.assert_close(weights["centers"], released["ce_fc.centroids"].float())
