from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bitseek.config import load_config
from bitseek.data.base import load_data
from bitseek.registry import create_model
from bitseek.train import Trainer, encode_dataset, load_model
from bitseek.train import checkpoint as ckpt
from bitseek.models.base import HashModel
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
        assert torch.equal(a, b), k  # bit for bit: same order, same RNG, same optimiser state


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


# --------------------------------------------------------------------------- passes, hooks, options


class _Recorder(HashModel):
    """Records which items each pass of each epoch saw, in order (WSCH-like: two passes after epoch 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.bits = 8
        self.enc = nn.Linear(6, 8)
        self.seen: dict[tuple[int, str], list[int]] = {}
        self.epoch = 0
        self.hook_batches: list[list[int]] = []

    def training_step(self, batch, phase="train"):
        self.seen.setdefault((self.epoch, phase), []).extend(int(i) for i in batch["index"])
        return {"loss": self.enc(batch["feats"].mean(1)).pow(2).mean()}

    def encode(self, batch):
        return torch.sign(self.enc(batch["feats"].mean(1)))

    def epoch_phases(self, epoch):
        return ["cluster", "contrastive"] if epoch else ["recon"]

    def before_epoch(self, epoch, ctx):
        self.epoch = epoch
        self.hook_batches.append([int(i) for b in ctx.batches(shuffle=False) for i in b["index"]])


def _record(toy_raw, out, **train):
    raw = {**toy_raw, "train": {**toy_raw["train"], "out_dir": str(out), **train}}
    cfg = load_config(raw=raw)
    torch.manual_seed(0)
    model = _Recorder()
    Trainer(model, cfg, load_data(cfg.data)).fit()
    return model


def test_each_pass_of_an_epoch_draws_its_own_shuffle(toy_raw, tmp_path):
    """As the official WSCH train.py: the cluster and contrastive passes iterate independent permutations."""
    m = _record(toy_raw, tmp_path / "a", epochs=3)
    for e in (1, 2):
        a, b = m.seen[(e, "cluster")], m.seen[(e, "contrastive")]
        assert sorted(a) == sorted(b) == list(range(40))
        assert a != b
    assert m.seen[(1, "cluster")] != m.seen[(2, "cluster")]
    again = _record(toy_raw, tmp_path / "b", epochs=3)
    assert again.seen == m.seen  # fixed by the seed


def test_pass_orders_survive_a_resume(toy_raw, tmp_path):
    full = _record(toy_raw, tmp_path / "full", epochs=3)
    _record(toy_raw, tmp_path / "part", epochs=2)
    resumed = _record(toy_raw, tmp_path / "part", epochs=3)
    assert resumed.seen[(2, "cluster")] == full.seen[(2, "cluster")]
    assert resumed.seen[(2, "contrastive")] == full.seen[(2, "contrastive")]


def test_before_epoch_sees_every_training_item_in_order(toy_raw, tmp_path):
    m = _record(toy_raw, tmp_path / "a", epochs=2)
    assert m.hook_batches == [list(range(40))] * 2


def test_grad_clip_bounds_the_update(toy_raw, tmp_path):
    """SGD with lr 1 and clip c moves the parameters by at most c per step (global norm)."""
    raw = {**toy_raw, "optim": {"name": "sgd", "lr": 1.0, "schedule": "none", "grad_clip": 1e-3}}
    raw["train"] = {**raw["train"], "epochs": 1, "max_steps_per_epoch": 1}
    cfg = load_config(raw=raw)
    torch.manual_seed(0)
    model = create_model(cfg.model)
    before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
    Trainer(model, cfg, load_data(cfg.data)).fit()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = float((after - before).norm())
    assert 0 < moved <= 1e-3 * (1 + 1e-5)


def test_workers_give_the_same_training_as_the_main_process(toy_raw, tmp_path):
    _, a, _ = _fit(toy_raw, out_dir=str(tmp_path / "w0"), epochs=2)
    _, b, _ = _fit(toy_raw, out_dir=str(tmp_path / "w2"), epochs=2, num_workers=2)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def test_bf16_autocast_on_cpu_trains(toy_raw, tmp_path):
    trainer, model, _ = _fit(toy_raw, out_dir=str(tmp_path / "bf16"), epochs=1, precision="bf16")
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unknown_precision_is_refused(toy_raw, tmp_path):
    from bitseek.errors import BitseekError

    with pytest.raises(BitseekError, match="train.precision"):
        _fit(toy_raw, out_dir=str(tmp_path / "x"), precision="fp8")


def test_epoch_records_are_means_over_the_steps(toy_raw, tmp_path):
    _, _, cfg = _fit(toy_raw, out_dir=str(tmp_path / "m"), epochs=1)
    records = [json.loads(x) for x in (cfg.out_dir / "log.jsonl").read_text().splitlines()]
    steps = [r["loss"] for r in records if r["event"] == "step"]
    epoch = [r for r in records if r["event"] == "epoch"][0]
    assert len(steps) == 5 and epoch["a/loss"] == pytest.approx(sum(steps) / 5, rel=1e-6)


def test_contiguous_shards_cover_every_item_once_in_order():
    from bitseek.train.dist import contiguous_shard

    for n in (0, 1, 7, 40, 41):
        for world in (1, 2, 3, 8):
            parts = [list(contiguous_shard(n, r, world)) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
