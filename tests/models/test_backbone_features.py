"""The backbone feature API: feature_info, out_indices, early stop and pre-activation taps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bitseek.errors import ConfigError
from bitseek.models.backbones import FeatureInfo, build_backbone

torch.set_num_threads(1)


def _randomise_bn(net: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine terms, so pre-activation maps have both signs."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)


def test_feature_info_resnet50_and_mini() -> None:
    info = build_backbone("resnet50").feature_info
    assert isinstance(info, FeatureInfo)
    assert info.channels() == (64, 256, 512, 1024, 2048)
    assert info.reduction() == (2, 4, 8, 16, 32)
    assert info.module_name() == ("act1", "layer1", "layer2", "layer3", "layer4")
    mini = build_backbone("resnet-mini").feature_info
    assert mini.channels() == (16, 16, 32, 64, 128) and mini.reduction() == (1, 1, 2, 4, 8)
    assert build_backbone("resnet18").out_channels == (256, 512)


def test_out_indices_select_maps_with_the_advertised_shapes() -> None:
    net = build_backbone("resnet50", out_indices=(0, 1, 2, 3, 4)).eval()
    assert net.out_channels == (64, 256, 512, 1024, 2048)
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 70, 53))
    sizes = net.feature_sizes((70, 53))
    assert len(maps) == 5
    for m, c, hw, r in zip(maps, net.out_channels, sizes, net.feature_info.reduction()):
        assert m.shape == (1, c, *hw)
        assert hw == (-(-70 // r), -(-53 // r))
    # order is the caller's, not sorted
    net.out_indices = (4, 2)
    with torch.no_grad():
        f4, f2 = net(torch.randn(1, 3, 64, 64))
    assert f4.shape == (1, 2048, 2, 2) and f2.shape == (1, 512, 8, 8)


def test_default_forward_equals_intermediates_3_4_bit_for_bit() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet50").eval()
    _randomise_bn(net)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        f3, f4 = net(x)
        g3, g4 = net.forward_intermediates(x, (3, 4))
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h3 = net.layer3(net.layer2(net.layer1(h)))
    assert torch.equal(f3, g3) and torch.equal(f4, g4) and torch.equal(f3, h3)
    assert torch.equal(f4, net.layer4(h3))


def test_stops_after_the_deepest_index() -> None:
    net = build_backbone("resnet-mini").eval()
    calls: list[str] = []
    net.layer4.register_forward_hook(lambda *a: calls.append("layer4"))
    with torch.no_grad():
        (f3,) = net.forward_intermediates(torch.randn(1, 3, 32, 32), (3,))
    assert f3.shape == (1, 64, 8, 8) and calls == []


def _bottleneck_by_hand(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Written out here from the ResNet paper, independent of the block's own forward."""
    def bn(m: torch.nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    out = F.relu(bn(blk.bn1, F.conv2d(x, blk.conv1.weight)))
    out = F.relu(bn(blk.bn2, F.conv2d(out, blk.conv2.weight, stride=blk.conv2.stride, padding=1)))
    out = bn(blk.bn3, F.conv2d(out, blk.conv3.weight))
    return out + x  # the last block of a stage has an identity shortcut


def test_pre_activation_tap_of_the_last_stage3_block() -> None:
    torch.manual_seed(1)
    net = build_backbone("resnet50").eval()
    _randomise_bn(net)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pre3, f4 = net.forward_intermediates(x, (3, 4), pre_act=(3,))
        post3, f4_ref = net(x)
        h = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))
        for blk in net.layer3[:-1]:
            h = blk(h)
        want = _bottleneck_by_hand(net.layer3[-1], h)
    assert (pre3 < 0).any(), "pre-activation map should keep negative values"
    torch.testing.assert_close(pre3, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.relu(pre3), post3)
    assert torch.equal(f4, f4_ref)  # stage 4 continues from the activated map


def test_pre_activation_basic_block() -> None:
    net = build_backbone("resnet-mini").eval()
    _randomise_bn(net)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (pre2,) = net.forward_intermediates(x, (2,), pre_act=(2,))
        (post2,) = net.forward_intermediates(x, (2,))
    assert (pre2 < 0).any() and torch.equal(torch.relu(pre2), post2)


@pytest.mark.parametrize("kwargs", [dict(indices=(5,)), dict(indices=(3, 3)), dict(indices=()),
                                    dict(indices=(4,), pre_act=(3,)), dict(indices=(0, 3), pre_act=(0,))])
def test_bad_indices_are_config_errors(kwargs: dict) -> None:
    net = build_backbone("resnet-mini")
    with pytest.raises(ConfigError):
        net.forward_intermediates(torch.randn(1, 3, 32, 32), **kwargs)


def test_bad_out_indices_at_build() -> None:
    with pytest.raises(ConfigError, match="out_indices"):
        build_backbone("resnet-mini", out_indices=(1, 7))
