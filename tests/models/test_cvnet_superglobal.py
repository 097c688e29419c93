"""SuperGlobal's pooling options on CVNet: ReLU+ at exactly the official places (against a from-scratch
functional forward), GeM+ / regional GeM / scale combination against direct float64 formulas, the
composed descriptor, and bit identity of everything when the options are off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from bitseek.errors import ConfigError, InputError
from bitseek.models.backbones import build_backbone
from bitseek.models.cvnet import CVNet, combine_scales, gem, regional_gem, superglobal_config
from bitseek.registry import MODELS

torch.set_num_threads(1)
FLOOR = 0.014


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics so activations sit on both sides of 0 and of the ReLU+ floor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)
    return net.eval()


@pytest.fixture(scope="module")
def r50() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomise(build_backbone("resnet50"))


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(3))


def _bn(x: Tensor, bn: torch.nn.BatchNorm2d) -> Tensor:
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _reference(net: torch.nn.Module, x: Tensor, out_floor: dict[int, float], inner_floor: dict[int, float]
               ) -> list[Tensor]:
    """Functional ResNet-50 forward; ``max(x, floor)`` replaces ReLU where the dicts say (stage -> floor)."""
    y = torch.relu(_bn(F.conv2d(x, net.conv1.weight, stride=2, padding=3), net.bn1))
    y = F.max_pool2d(y, 3, 2, 1)
    outs = []
    for s, stage in enumerate(net.stages, 1):
        fo, fi = out_floor.get(s, 0.0), inner_floor.get(s, 0.0)
        for blk in stage:
            idt = y if blk.downsample is None else _bn(F.conv2d(y, blk.downsample[0].weight,
                                                                stride=blk.downsample[0].stride), blk.downsample[1])
            h = _bn(F.conv2d(y, blk.conv1.weight), blk.bn1).clamp(min=fi)
            h = _bn(F.conv2d(h, blk.conv2.weight, stride=blk.conv2.stride, padding=1), blk.bn2).clamp(min=fi)
            h = _bn(F.conv2d(h, blk.conv3.weight), blk.bn3)
            y = (h + idt).clamp(min=fo)
        outs.append(y)
    return outs


@torch.no_grad()
def test_default_backbone_runs_the_very_same_ops_bit_for_bit(r50, images) -> None:
    """Floors 0: the module's own ReLU calls, nothing else (torch.equal), also after a set/reset cycle."""
    def plain(x: Tensor) -> list[Tensor]:
        x = r50.maxpool(r50.relu(r50.bn1(r50.conv1(x))))
        outs = []
        for stage in r50.stages:
            for b in stage:
                idt = x if b.downsample is None else b.downsample(x)
                h = b.relu(b.bn1(b.conv1(x)))
                h = b.relu(b.bn2(b.conv2(h)))
                x = b.relu(b.bn3(b.conv3(h)) + idt)
            outs.append(x)
        return outs

    want = plain(images.clone())
    got = r50.forward_intermediates(images.clone(), (1, 2, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    r50.set_activation_floor(FLOOR)
    assert not torch.equal(r50.forward_intermediates(images.clone(), (4,))[0], want[3])
    r50.set_activation_floor(0.0)
    again = r50.forward_intermediates(images.clone(), (1, 2, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(again, want))
    # the pre-activation tap (CVNet's re-rank input) is untouched as well
    pre = r50.forward_intermediates(images.clone(), (3,), pre_act=(3,))[0]
    assert torch.equal(torch.relu(pre), want[2])


@torch.no_grad()
def test_relup_clamps_exactly_stage_1_to_3_outputs_and_stage_1_inner(r50, images) -> None:
    model = MODELS.create(MODELS.config("cvnet", depth=50, relup=True))
    model.backbone.load_state_dict(r50.state_dict())
    model.eval()
    got = model.backbone.forward_intermediates(images, (1, 2, 3, 4))
    want = _reference(r50, images, {1: FLOOR, 2: FLOOR, 3: FLOOR}, {1: FLOOR})
    for a, b in zip(got, want):  # float32 sums in another order: tolerance relative to the map's scale
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    # a misplaced clamp is visible: also flooring stage 2's inner ReLUs, or stage 4's output, differs
    for wrong in (_reference(r50, images, {1: FLOOR, 2: FLOOR, 3: FLOOR}, {1: FLOOR, 2: FLOOR}),
                  _reference(r50, images, {1: FLOOR, 2: FLOOR, 3: FLOOR, 4: FLOOR}, {1: FLOOR}),
                  _reference(r50, images, {1: FLOOR, 2: FLOOR, 3: FLOOR}, {})):
        assert (wrong[3] - got[3]).abs().max() > 1e-3
    assert min(float(t.min()) for t in got[:3]) == pytest.approx(FLOOR)
    assert float(got[3].min()) == 0.0  # stage 4 keeps its ReLU
    assert not any(k for k in model.state_dict() if "floor" in k)  # not part of the weights
    with pytest.raises(ConfigError, match="floor"):
        model.backbone.set_activation_floor(-1.0)


def test_gemp_against_the_formula() -> None:
    x = torch.rand(2, 5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.2
    want = np.empty((2, 5))
    xn = x.numpy()
    for b in range(2):
        for c in range(5):
            v = np.maximum(xn[b, c].ravel(), 1e-8)
            want[b, c] = np.mean(v ** 4.6) ** (1 / 4.6)
    np.testing.assert_allclose(gem(x, 4.6).numpy(), want, rtol=1e-12)


def test_regional_gem_against_a_loop_with_explicit_reflection() -> None:
    x = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xn = x.numpy()
    p, size, h, w = 2.5, 5, 4, 6

    def reflect(i: int, n: int) -> int:  # ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    want = np.empty_like(xn)
    for c in range(3):
        for i in range(h):
            for j in range(w):
                win = [xn[0, c, reflect(i + di, h), reflect(j + dj, w)] for di in range(-2, 3) for dj in range(-2, 3)]
                local = np.mean(np.power(win, p)) ** (1 / p)
                want[0, c, i, j] = 0.5 * local + 0.5 * xn[0, c, i, j]
    np.testing.assert_allclose(regional_gem(x, p, size).numpy(), want, rtol=1e-12)
    # the official form, LPPool2d(p, 5) over x / 25^(1/p), is the same thing
    off = 0.5 * F.lp_pool2d(F.pad(x / 25 ** (1 / p), (2, 2, 2, 2), mode="reflect"), p, 5, stride=1) + 0.5 * x
    np.testing.assert_allclose(off.numpy(), want, rtol=1e-10)
    with pytest.raises(InputError, match="model.rgem"):
        regional_gem(torch.rand(1, 3, 2, 5), p, size)


def test_combine_scales_mean_and_max() -> None:
    raw = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dn = raw.numpy() / np.linalg.norm(raw.numpy(), axis=-1, keepdims=True)  # each scale normalised first
    mean = dn.mean(0)
    mx = dn.max(0)
    np.testing.assert_allclose(combine_scales(raw, "mean").numpy(), mean / np.linalg.norm(mean, axis=1, keepdims=True))
    np.testing.assert_allclose(combine_scales(list(raw), "max").numpy(), mx / np.linalg.norm(mx, axis=1, keepdims=True))
    assert not np.allclose(combine_scales(raw, "mean").numpy(), combine_scales(raw, "max").numpy())
    with pytest.raises(ConfigError, match="scale combination"):
        combine_scales(raw, "median")
    with pytest.raises(InputError, match="per scale"):
        combine_scales(raw[0], "mean")
    model = MODELS.create(superglobal_config(50))
    assert torch.equal(model.combine_scales(raw), combine_scales(raw, "max"))
    # "mean" is the protocol's aggregation bit for bit
    from bitseek.encode.multiscale import aggregate_scales
    assert torch.equal(combine_scales(list(raw.float()), "mean"), aggregate_scales(list(raw.float())))


def _head(model: CVNet, r50: torch.nn.Module) -> CVNet:
    model.backbone.load_state_dict(r50.state_dict())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.whiten.weight.copy_(torch.randn(2048, 2048, generator=g) * 0.02)
        model.whiten.bias.copy_(torch.randn(2048, generator=g) * 0.1)
        model.pool.p.fill_(2.7)
    return model.eval()


@torch.no_grad()
def test_superglobal_descriptor_is_the_composition_of_the_pieces(r50, images) -> None:
    cfg = superglobal_config(50)
    assert (cfg.gemp, cfg.rgem, cfg.relup, cfg.prefc_l2, cfg.scale_combine) == (True, True, True, True, "max")
    assert superglobal_config(50, sgem=False, relup=False).scale_combine == "mean"
    model = _head(MODELS.create(cfg), r50)
    f4 = _reference(r50, images, {1: FLOOR, 2: FLOOR, 3: FLOOR}, {1: FLOOR})[3].double()
    f4 = 0.5 * F.avg_pool2d(F.pad(f4, (2, 2, 2, 2), mode="reflect").pow(2.5), 5, stride=1).pow(1 / 2.5) + 0.5 * f4
    pooled = f4.clamp(min=1e-8).pow(4.6).mean(dim=(2, 3)).pow(1 / 4.6)
    pooled = pooled / pooled.norm(dim=1, keepdim=True)
    out = pooled @ model.whiten.weight.double().T + model.whiten.bias.double()
    want = out / out.norm(dim=1, keepdim=True)
    got = model.global_descriptor(images)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # every switch matters on its own
    for off in ("gemp", "rgem", "relup", "prefc_l2"):
        other = _head(MODELS.create(superglobal_config(50, **{"gemp": True, "rgem": True, "relup": True})), r50)
        setattr(other.cfg, off, False)
        if off == "relup":
            other.backbone.set_activation_floor(0.0)
        assert (other.global_descriptor(images) - got).abs().max() > 1e-4, off


@torch.no_grad()
def test_default_config_is_plain_cvnet(r50, images) -> None:
    cfg = MODELS.config("cvnet", depth=50)
    assert (cfg.gemp, cfg.rgem, cfg.relup, cfg.prefc_l2, cfg.scale_combine) == (False, False, False, False, "mean")
    model = _head(MODELS.create(cfg), r50)
    (f4,) = r50.forward_intermediates(images, (4,))
    want = F.normalize(model.whiten(model.pool(f4)), dim=1)
    assert torch.equal(model.global_descriptor(images), want)
    sg = _head(MODELS.create(superglobal_config(50)), r50)
    assert sorted(sg.state_dict()) == sorted(model.state_dict())  # same checkpoint keys either way


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="scale_combine"):
        MODELS.config("cvnet", scale_combine="sum")
    with pytest.raises(ConfigError, match="rgem_size"):
        MODELS.config("cvnet", rgem_size=4)
    with pytest.raises(ConfigError, match="gemp_p"):
        MODELS.config("cvnet", gemp_p=0)
    with pytest.raises(ConfigError, match="relup_floor"):
        MODELS.config("cvnet", relup_floor=-0.1)


def test_set_pooling_on_a_built_model(r50, images) -> None:
    plain = _head(MODELS.create(MODELS.config("cvnet", depth=50)), r50)
    assert plain.pooling_id() == ""
    want = plain.global_descriptor(images)
    sg = _head(MODELS.create(superglobal_config(50)), r50)
    plain.set_pooling(gemp=True, rgem=True, relup=True, prefc_l2=True, scale_combine="max")
    assert plain.pooling_id() == sg.pooling_id() == "relup0.014-rgem2.5x5-gemp4.6-l2fc-scalemax"
    assert torch.equal(plain.global_descriptor(images), sg.global_descriptor(images))
    plain.set_pooling(gemp=False, rgem=False, relup=False, prefc_l2=False, scale_combine="mean")
    assert torch.equal(plain.global_descriptor(images), want)  # and back, bit for bit
    with pytest.raises(ConfigError, match="pooling options"):
        plain.set_pooling(depth=101)
    with pytest.raises(ConfigError, match="scale_combine"):
        plain.set_pooling(scale_combine="sum")
