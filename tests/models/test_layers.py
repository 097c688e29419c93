"""Layers shared by the video hashing models: binariser, positions, Transformer block."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitseek.errors import InputError
from bitseek.models.layers import Attention, BinaryTanh, Block, binarize_ste, sinusoid_table, xavier_init_

torch.set_num_threads(1)


# --------------------------------------------------------------------------- binariser


class _ReferenceRound(torch.autograd.Function):
    """The reference rounding: straight through, except where its input is exactly 0."""

    @staticmethod
    def forward(ctx, y):  # type: ignore[override]
        ctx.save_for_backward(y)
        return torch.round(y)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return g * (y != 0).to(g.dtype)


def _reference_binarize(x: torch.Tensor) -> torch.Tensor:
    """The reference graph: hard sigmoid written as in-place index assignments, then 2*round-1."""
    y = (x + 1.0) / 2.0
    y[y > 1] = 1
    y[y < 0] = 0
    return 2.0 * _ReferenceRound.apply(y) - 1.0


def test_binarize_forward_values():
    x = torch.tensor([-3.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 0.999, 1.0, 2.5])
    # round(0.5) is half-to-even -> 0, so x = 0 maps to -1 like the reference torch.round.
    expected = torch.tensor([-1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert torch.equal(binarize_ste(x), expected)
    assert torch.equal(BinaryTanh()(x), expected)


def test_binarize_backward_mask_at_end_points():
    x = torch.tensor([-3.0, -1.0, -0.999, 0.0, 0.7, 1.0, 1.001, 4.0], requires_grad=True)
    upstream = torch.arange(1.0, 9.0)
    binarize_ste(x).backward(upstream)
    # gradient passes for -1 < x <= 1 only: x == -1 is blocked, x == 1 passes
    passes = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    assert torch.equal(x.grad, upstream * passes)


def test_binarize_matches_reference_graph_on_random_and_boundary_values():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(500, generator=g) * 1.5,
                   torch.tensor([-1.0, 1.0, 0.0, -1.0 + 1e-7, 1.0 + 1e-7, 1.0 - 1e-7])])
    up = torch.randn(x.shape, generator=g)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    out_a = binarize_ste(a)
    out_b = _reference_binarize(b)
    assert torch.equal(out_a, out_b)
    out_a.backward(up)
    out_b.backward(up)
    assert torch.equal(a.grad, b.grad)
    assert set(out_a.unique().tolist()) <= {-1.0, 1.0}


def test_binarize_keeps_dtype_and_shape():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    out = binarize_ste(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    out.sum().backward()
    assert x.grad.dtype == torch.float64


# --------------------------------------------------------------------------- positions


def test_sinusoid_table_matches_formula():
    n, d = 7, 10
    ref = np.zeros((n, d))
    for p in range(n):
        for j in range(d):
            angle = p / 10000 ** (2 * (j // 2) / d)
            ref[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    table = sinusoid_table(n, d)
    assert table.dtype == torch.float32 and table.shape == (n, d)
    np.testing.assert_allclose(table.numpy(), ref.astype(np.float32), rtol=0, atol=1e-7)


def test_sinusoid_table_odd_dim_and_errors():
    assert sinusoid_table(3, 5).shape == (3, 5)
    with pytest.raises(InputError):
        sinusoid_table(0, 4)


# --------------------------------------------------------------------------- attention and block


def _manual_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    inner = attn.q_bias.numel()
    hd = inner // attn.heads
    bias = torch.cat([attn.q_bias, torch.zeros(inner), attn.v_bias])
    qkv = x @ attn.qkv.weight.T + bias
    q, k, v = (qkv[..., i * inner:(i + 1) * inner].reshape(b, n, attn.heads, hd).transpose(1, 2) for i in range(3))
    weights = torch.softmax((q * hd ** -0.5) @ k.transpose(-1, -2), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, inner)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_attention_inner_width_quirk():
    attn = Attention(256, 6)
    assert attn.head_dim == 42
    assert attn.qkv.weight.shape == (3 * 252, 256) and attn.qkv.bias is None
    assert attn.q_bias.shape == (252,) and attn.v_bias.shape == (252,)
    assert attn.proj.weight.shape == (256, 252)


def test_attention_matches_manual_computation():
    torch.manual_seed(0)
    attn = Attention(24, 5)  # head_dim 4, inner 20 != 24
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(3, 7, 24)
    torch.testing.assert_close(attn(x), _manual_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_block_is_prenorm_with_given_eps():
    torch.manual_seed(1)
    blk = Block(16, 4, mlp_ratio=4.0, eps=1e-6)
    assert blk.norm1.eps == 1e-6 and blk.mlp.fc1.out_features == 64
    names = {n for n, _ in blk.named_parameters()}
    assert names == {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias",
                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                     "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"}
    x = torch.randn(2, 5, 16)
    h = x + _manual_attention(blk.attn, F.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias, 1e-6))
    m = F.layer_norm(h, (16,), blk.norm2.weight, blk.norm2.bias, 1e-6)
    ref = h + F.gelu(m @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    torch.testing.assert_close(blk(x), ref, rtol=1e-5, atol=1e-5)


def test_xavier_init():
    torch.manual_seed(2)
    blk = Block(32, 4)
    with torch.no_grad():
        for p in blk.parameters():
            p.fill_(3.0)
    blk.apply(xavier_init_)
    bound = math.sqrt(6.0 / (32 + 96 * 1))  # qkv: fan_in 32, fan_out 96
    assert blk.attn.qkv.weight.abs().max() <= bound
    assert torch.all(blk.mlp.fc1.bias == 0) and torch.all(blk.norm1.weight == 1) and torch.all(blk.norm1.bias == 0)
