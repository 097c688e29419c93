"""CVNet re-ranker training: frozen backbone, a loss that learns, the engine's exact resume, the recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from bitseek.config import load_config, resolve_config_path
from bitseek.errors import ConfigError
from bitseek.models.cvnet import CVNet, CVNetConfig
from bitseek.models.cvnet.rerank_training import CVNetRerank, CVNetRerankConfig
from bitseek.train.checkpoint import load_model
from bitseek.train.cvnet_rerank import train_rerank

torch.set_num_threads(1)
SMALL = dict(reduction_dim=32, rerank_dim=16)


def _model() -> CVNetRerank:
    torch.manual_seed(0)
    return CVNetRerank(CVNetRerankConfig(**SMALL))


def test_only_the_rerank_head_trains_and_batchnorm_stays_frozen():
    m = _model().train()
    assert all(not mod.training for mod in m.net.backbone.modules())
    assert m.net.rerank.training
    x = torch.randn(4, 3, 48, 48)
    out = m.training_step({"query_image": x, "key_image": x.flip(0), "target": torch.tensor([1, 0, 0, 1])})
    out["loss"].backward()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.rerank.") for n in trainable)
    assert {n for n, p in m.named_parameters() if p.grad is not None} == trainable
    assert len(trainable) == len(list(m.net.rerank.parameters()))  # projections, 4D blocks, MLP: all of them


def test_loss_decreases_on_a_separable_problem():
    """Positives: the key map is the query map plus noise; negatives: an unrelated map."""
    m = _model().train()
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(m.param_groups(), lr=1e-3)
    losses = []
    for _ in range(25):
        q = torch.randn(8, 1024, 4, 4, generator=g)
        k = torch.cat([q[:4] + 0.1 * torch.randn(4, 1024, 4, 4, generator=g), torch.randn(4, 1024, 4, 4, generator=g)])
        out = m.training_step({"query_map": q, "key_map": k, "target": torch.tensor([1] * 4 + [0] * 4)})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert np.mean(losses[:3]) > 0.6  # ~ln 2 at the start
    assert np.mean(losses[-3:]) < 0.2 < math.log(2)


def test_hidden_cells_change_what_the_head_sees():
    m = _model().eval()
    q = torch.randn(2, 1024, 4, 4)
    full = {"query_map": q, "key_map": q, "target": torch.tensor([1, 1])}
    hidden = {**full, "query_mask": torch.tensor([[[0.0, 1.0], [1.0, 1.0]]] * 2)}
    assert torch.equal(m._side(full, "query"), q)
    assert (m._side(hidden, "query")[:, :, :2, :2] == 0).all()


def _folder(root, classes=3, per=3, size=64):
    rng = np.random.default_rng(0)
    for c in range(classes):
        base = rng.integers(0, 255, (size, size, 3))
        for i in range(per):
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            (root / f"lm{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / f"lm{c}" / f"{i}.jpg", quality=95)
    return root


def _overrides(root, out, epochs):
    return [f"data.root={root}", "data.image_size=48", "data.batch_size=6", "data.cache_maps=true", "data.hard_k=2",
            "model.reduction_dim=32", "model.rerank_dim=16", "model.init=", "optim.lr=0.001",
            f"train.epochs={epochs}", f"train.out_dir={out}", "train.device=cpu", "train.progress=false",
            "train.log_every=1", "train.num_workers=0"]


def test_train_rerank_resumes_exactly_and_changes_only_the_head(tmp_path):
    root = _folder(tmp_path / "train")
    torch.manual_seed(0)
    start = CVNet(CVNetConfig(**SMALL)).eval()
    full, run = train_rerank("cvnet/rerank-r50", _overrides(root, tmp_path / "full", 2), net=start)
    train_rerank("cvnet/rerank-r50", _overrides(root, tmp_path / "part", 1), net=start)
    resumed, _ = train_rerank("cvnet/rerank-r50", _overrides(root, tmp_path / "part", 2), net=start)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    before, after = start.state_dict(), full.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("rerank.") for k in changed)
    exported = load_model(run / "cvnet")
    assert type(exported) is CVNet
    for k, v in exported.state_dict().items():
        assert torch.equal(v, after[k]), k
    log = (run / "log.jsonl").read_text()
    assert '"train/hard_share"' in log and '"train/accuracy"' in log


@pytest.mark.parametrize("name,depth", [("cvnet/rerank-r50", 50), ("cvnet/rerank-r101", 101)])
def test_paper_recipes_load(name, depth):
    cfg = load_config(resolve_config_path(name))
    assert cfg.model.name == "cvnet-rerank" and cfg.model.depth == depth
    assert cfg.data.name == "rerank-pairs" and cfg.data.hard_k == 10 and cfg.data.hard_ratio[0] < cfg.data.hard_ratio[1]
    assert cfg.data.hide_prob[0] < cfg.data.hide_prob[1] and not cfg.data.cache_maps
    assert cfg.train.precision == "fp32"


def test_other_models_are_refused():
    from bitseek.train.cvnet_rerank import rerank_config

    with pytest.raises(ConfigError, match="cvnet-rerank"):
        rerank_config(load_config(raw={"name": "x", "model": {"name": "cvnet"}, "data": {"name": "rerank-pairs"}}))
