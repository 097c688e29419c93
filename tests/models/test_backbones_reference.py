"""ResNet backbones against a from-scratch torchvision-layout forward (tests/models/reference_nets.py).

Shapes and parameter counts cannot see a stride moved from the 3x3 to the 1x1 convolution of a
bottleneck (ResNet v1 instead of torchvision's v1.5) or a ReLU applied before the residual add;
the stage outputs can. Weights, BN statistics and affine parameters are all randomised and the
comparison runs in float64, so agreement is to rounding error only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bitseek.models.backbones import build_backbone

torch.set_num_threads(1)


def _load_reference():
    spec = importlib.util.spec_from_file_location("bitseek_test_reference_nets",
                                                  Path(__file__).with_name("reference_nets.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()


def randomise_(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-default BN statistics and affine parameters (defaults would hide a misplaced BN or ReLU)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return net.double().eval()


@pytest.mark.parametrize("name, size, kwargs, stem", [
    ("resnet50", 64, {}, {}),
    ("resnet18", 64, {}, {}),
    ("resnet-mini", 32, {"widths": [8, 16, 32, 64], "blocks": [2, 1, 2, 1]}, {"stem_stride": 1, "maxpool": False}),
])
def test_stage_outputs_equal_the_reference_forward(name, size, kwargs, stem) -> None:
    torch.manual_seed(0)
    net = randomise_(build_backbone(name, **kwargs))
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sd = {k: v for k, v in net.state_dict().items()}
    with torch.no_grad():
        f3, f4 = net(x)
        r3, r4 = ref.resnet_stages(x, sd, **stem)
    assert f3.shape == r3.shape and f4.shape == r4.shape
    for got, want in ((f3, r3), (f4, r4)):
        scale = want.abs().max().item()
        assert scale > 0
        assert (got - want).abs().max().item() <= 1e-10 * scale


def test_resnet50_downsamples_in_the_3x3_convolution() -> None:
    """torchvision v1.5: a strided bottleneck keeps its 1x1 at stride 1 and strides the 3x3."""
    net = build_backbone("resnet50")
    for layer, stride in (("layer2", 2), ("layer3", 2), ("layer4", 2)):
        block = getattr(net, layer)[0]
        assert block.conv1.stride == (1, 1) and block.conv2.stride == (stride, stride)
        assert block.downsample[0].stride == (stride, stride)
