"""Training checkpoints: an exact round trip (weights, optimiser moments, every RNG), pruning, and
resuming from the newest checkpoint that verifies when later ones are damaged or incomplete."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bitseek.errors import FileFormatError
from bitseek.registry import MODELS
from bitseek.train.checkpoint import (apply_training_state, find_resume_state, list_checkpoints, read_training_state,
                                      save_training_state)


def _model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS.create("toy-model", bits=8, dim=6)  # registered for each test by tests/conftest.py
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = {"feats": torch.randn(4, 3, 6)}
    for _ in range(3):  # non-trivial Adam moments
        opt.zero_grad()
        model.training_step(batch)["loss"].backward()
        opt.step()
    return model, opt


def _draws() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def test_round_trip_restores_weights_moments_and_every_rng(tmp_path) -> None:
    model, opt = _model_and_optimizer()
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    save_training_state(tmp_path, model, model.cfg, opt, epoch=3, global_step=17)
    after_save = _draws()

    fresh, fresh_opt = _model_and_optimizer(seed=5)  # different weights and moments
    _draws()  # and the RNGs moved on
    st = read_training_state(tmp_path / "checkpoints" / "epoch-0003")
    assert (st.epoch, st.global_step) == (3, 17)
    apply_training_state(st, fresh, fresh_opt)
    assert _draws() == after_save
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    for p, q in zip(model.parameters(), fresh.parameters()):
        s, t = opt.state[p], fresh_opt.state[q]
        assert torch.equal(s["exp_avg"], t["exp_avg"]) and torch.equal(s["exp_avg_sq"], t["exp_avg_sq"])
        assert float(s["step"]) == float(t["step"]) == 3.0


def test_only_the_newest_checkpoints_are_kept(tmp_path) -> None:
    model, opt = _model_and_optimizer()
    for epoch in range(1, 5):
        save_training_state(tmp_path, model, model.cfg, opt, epoch=epoch, global_step=epoch, keep=2)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["name"] == "epoch-0004"


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data, past the header
    path.write_bytes(bytes(data))


def test_resume_skips_a_damaged_newest_checkpoint_and_says_why(tmp_path) -> None:
    model, opt = _model_and_optimizer()
    for epoch in (1, 2):
        save_training_state(tmp_path, model, model.cfg, opt, epoch=epoch, global_step=epoch)
    _flip_a_byte(tmp_path / "checkpoints" / "epoch-0002" / "trainer.safetensors")
    st, problems = find_resume_state(tmp_path)
    assert st is not None and st.epoch == 1
    assert len(problems) == 1 and "epoch-0002" in problems[0]


def test_resume_ignores_a_folder_newer_than_the_pointer(tmp_path) -> None:
    """A save interrupted before ``last.json`` moved: its folder is not trusted, even if it looks whole."""
    model, opt = _model_and_optimizer()
    for epoch in (1, 2):
        save_training_state(tmp_path, model, model.cfg, opt, epoch=epoch, global_step=epoch)
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps({"name": "epoch-0001", "epoch": 1}))
    st, problems = find_resume_state(tmp_path)
    assert st.epoch == 1 and problems == []


def test_no_valid_checkpoint_is_an_error_that_says_what_to_do(tmp_path) -> None:
    model, opt = _model_and_optimizer()
    save_training_state(tmp_path, model, model.cfg, opt, epoch=1, global_step=1)
    _flip_a_byte(tmp_path / "checkpoints" / "epoch-0001" / "model.safetensors")
    with pytest.raises(FileFormatError, match="no usable checkpoint.*new train.out_dir"):
        find_resume_state(tmp_path)
    assert find_resume_state(tmp_path / "fresh") == (None, [])


def test_the_ram_budget_is_not_part_of_a_runs_identity() -> None:
    """It changes how the training split is read, never the bytes served, so a run resumes across it."""
    from bitseek.train.checkpoint import changed_settings

    old = {"data": {"name": "fcvid", "batch_size": 128}}  # a run folder from before the key existed
    assert changed_settings(old, {"data": {"name": "fcvid", "batch_size": 128, "ram_budget": "auto"}}) == []
    assert changed_settings({"data": {"ram_budget": "8GB"}}, {"data": {"ram_budget": "0"}}) == []
    assert changed_settings(old, {"data": {"name": "fcvid", "batch_size": 64}}) == ["data.batch_size: 128 -> 64"]
