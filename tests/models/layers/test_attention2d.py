"""DOLG / CSCE-Net local-branch layers against from-scratch forwards (tests/models/reference_nets.py).

The reference ``SpatialAttention2d`` L2-normalises the BN output *before* its ReLU and uses
``BatchNorm2d(momentum=0.9)``; DOLG's ASPP concatenates [image pool, 1x1, dilated 3x3 ...]. Each of
these is invisible to shape checks and to a training smoke test; the numbers here are not.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from bitseek.models.layers.attention2d import MultiAtrous, SpatialAttention2d

torch.set_num_threads(1)


def _load_reference():
    spec = importlib.util.spec_from_file_location("bitseek_test_reference_nets",
                                                  Path(__file__).parents[1] / "reference_nets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _attention(seed: int = 0) -> SpatialAttention2d:
    torch.manual_seed(seed)
    layer = SpatialAttention2d(6, 10).double()
    g = _gen(seed + 1)
    with torch.no_grad():
        layer.bn.running_mean.copy_(0.3 * torch.randn(10, generator=g, dtype=torch.float64))
        layer.bn.running_var.copy_(0.5 + torch.rand(10, generator=g, dtype=torch.float64))
        layer.bn.weight.copy_(0.5 + torch.rand(10, generator=g, dtype=torch.float64))
        layer.bn.bias.copy_(0.3 * torch.randn(10, generator=g, dtype=torch.float64))
    return layer.eval()


def test_spatial_attention_equals_the_reference_forward() -> None:
    layer = _attention()
    x = torch.randn(3, 6, 5, 4, generator=_gen(7), dtype=torch.float64)
    with torch.no_grad():
        out, score = layer(x)
        want_out, want_score = ref.spatial_attention(x, layer.state_dict())
    assert out.shape == (3, 10, 5, 4) and score.shape == (3, 1, 5, 4)
    torch.testing.assert_close(score, want_score, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    # the normalised map has unit channel norm wherever the score is non-zero: out / score
    norms = (out / score).pow(2).sum(dim=1).sqrt()
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_spatial_attention_batch_norm_momentum_is_the_released_0_9() -> None:
    """One training step moves the running statistics 90 % of the way to the batch's."""
    layer = _attention().train()
    old_mean, old_var = layer.bn.running_mean.clone(), layer.bn.running_var.clone()
    x = torch.randn(4, 6, 3, 3, generator=_gen(3), dtype=torch.float64)
    with torch.no_grad():
        pre = torch.nn.functional.conv2d(x, layer.conv1.weight, layer.conv1.bias)
        layer(x)
    n = pre.shape[0] * pre.shape[2] * pre.shape[3]
    batch_mean = pre.mean(dim=(0, 2, 3))
    batch_var = ((pre - batch_mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3)) / (n - 1)  # unbiased
    torch.testing.assert_close(layer.bn.running_mean, 0.1 * old_mean + 0.9 * batch_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bn.running_var, 0.1 * old_var + 0.9 * batch_var, rtol=1e-12, atol=1e-12)


def test_multi_atrous_equals_the_reference_forward() -> None:
    torch.manual_seed(0)
    aspp = MultiAtrous(6, 8, branch_channels=4, dilations=(1, 2, 3)).double().eval()
    with torch.no_grad():  # non-zero biases everywhere, so a dropped or reordered branch shows
        for m in aspp.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=_gen(m.out_channels), dtype=torch.float64))
    x = torch.randn(2, 6, 7, 5, generator=_gen(5), dtype=torch.float64)
    conv_wb = [(b.weight, b.bias) for b in aspp.branches]
    pool = (aspp.image_pool[1].weight, aspp.image_pool[1].bias)
    fuse = (aspp.fuse[0].weight, aspp.fuse[0].bias)
    with torch.no_grad():
        got = aspp(x)
        want = ref.multi_atrous(x, conv_wb, [1, 2, 3], pool, fuse)
    assert got.shape == (2, 8, 7, 5)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert aspp.fuse[0].in_channels == 4 * 5  # image pool + 1x1 + three dilated branches
