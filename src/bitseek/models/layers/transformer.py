"""Pre-norm Transformer block (BEiT / VideoMAE flavour) with fused attention.

Parameter names inside a block (``norm1``, ``attn.qkv``, ``attn.q_bias``, ``attn.v_bias``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) follow the common timm/VideoMAE scheme so that
released checkpoints map onto them one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import InputError


class Attention(nn.Module):
    """Multi-head self-attention whose inner width is ``heads * (dim // heads)``.

    When ``dim`` is not a multiple of ``heads`` (ConMH: 256 / 6 -> head_dim 42) the inner width
    (252) differs from ``dim`` and ``proj`` maps it back; this quirk is kept so released weights
    load. The qkv projection has a bias on q and v only (k's is fixed at zero), as in BEiT.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if heads < 1 or dim // heads < 1:
            raise InputError(f"Attention: need 1 <= heads <= dim, got dim={dim}, heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        inner = self.head_dim * heads
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(inner))
            self.v_bias = nn.Parameter(torch.zeros(inner))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        # Output features are laid out [q | k | v], each split into contiguous per-head chunks.
        q, k, v = qkv.reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), fused where available
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Mlp(nn.Module):
    """Linear -> GELU (exact) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; no dropout, drop-path or layer scale."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform Linear weights, zero biases, unit/zero LayerNorm: the MAE/ConMH init.

    Applied to a module tree with ``module.apply(xavier_init_)``.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
