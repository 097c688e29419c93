from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bitseek.config import load_config
from bitseek.data.base import load_data
from bitseek.registry import create_model
from bitseek.train import Trainer, encode_dataset, load_model
from bitseek.train import checkpoint as ckpt
from bitseek.train.engine import TrainingDiverged


def _fit(raw, **train):
    raw = {**raw, "train": {**raw["train"], **train}}
    cfg = load_config(raw=raw)
    torch.manual_seed(0)
    model = create_model(cfg.model)
    trainer = Trainer(model, cfg, load_data(cfg.data))
    trainer.fit()
    return trainer, model, cfg


def test_fit_writes_run_folder(toy_raw, tmp_path):
    trainer, model, cfg = _fit(toy_raw)
    run = cfg.out_dir
    assert (run / "config.yaml").exists() and (run / "DONE").exists()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    # the step schedule halves the lr every epoch
    assert [r["lr"] for r in epochs] == pytest.approx([0.01, 0.005, 0.0025])
    # odd epochs run two phases
    assert "b/loss" in epochs[1] and "b/loss" not in epochs[0]
    # 40 items / batch 8 = 5 steps per phase; phases: 1 + 2 + 1
    assert trainer.global_step == 20
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 3
    reloaded = load_model(run / "model")
    for (k, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a.cpu(), b), k


def test_resume_equals_uninterrupted(toy_raw, tmp_path):
    _, full, _ = _fit(toy_raw, out_dir=str(tmp_path / "full"))
    _fit(toy_raw, out_dir=str(tmp_path / "part"), epochs=1)
    trainer, resumed, _ = _fit(toy_raw, out_dir=str(tmp_path / "part"))
    assert trainer.epoch == 3
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b), k


def test_crash_during_checkpoint_keeps_previous(toy_raw, tmp_path, monkeypatch):
    _fit(toy_raw, epochs=1)
    run = tmp_path / "run"
    before = ckpt.last_checkpoint(run)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "write_tensors", boom)
    with pytest.raises(OSError):
        _fit(toy_raw, epochs=2)
    assert ckpt.last_checkpoint(run) == before
    monkeypatch.undo()
    trainer, _, _ = _fit(toy_raw, epochs=2)
    assert trainer.epoch == 2


def test_nan_loss_is_reported(toy_raw):
    raw = {**toy_raw, "model": {"name": "toy-model", "nan_after": 3}}
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        _fit(raw)


def test_encode_dataset_order_and_values(toy_raw):
    _, model, cfg = _fit(toy_raw, epochs=1)
    data = load_data(cfg.data)
    codes = encode_dataset(model, data.searched, batch_size=7, device="cpu")
    assert codes.shape == (40, 8) and codes.dtype == np.float32
    direct = model.encode({"feats": data.searched.x}).numpy()
    np.testing.assert_array_equal(codes, direct)


def test_corrupt_pointer_falls_back_and_says_so(toy_raw, tmp_path, caplog):
    _fit(toy_raw, epochs=1)
    (tmp_path / "run" / "checkpoints" / "last.json").write_text("{broken")
    trainer, _, _ = _fit(toy_raw, epochs=2)
    assert trainer.epoch == 2
    assert "corrupt checkpoint pointer" in caplog.text and "epoch-0001" in caplog.text
