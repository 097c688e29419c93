"""Center-pivot 4D convolution (Min et al., HSNet, ICCV 2021), as CVNet's correlation encoder uses it.

A full k^4 kernel over a (query h, query w, key h, key w) correlation is costly; the center-pivot
form keeps only the kernel entries whose key offset or whose query offset is the centre. That is the
sum of two 2D convolutions:

* ``query_conv``: a 2D conv over the query dims, applied at every key position (key positions
  sub-sampled 0, s, 2s, ... when the key stride s > 1);
* ``key_conv``: a 2D conv over the key dims, applied at every query position (sub-sampled by the
  query stride).

Both have a bias. Padding is ``k // 2`` with odd ``k``, so both terms have ``ceil(n / s)`` positions
per dim and add up. Input and output: ``(B, C, Hq, Wq, Hk, Wk)``.

:meth:`CenterPivotConv4d.forward` is the channels-first form the official code runs (same
operations, so the same floats). :meth:`CenterPivotConv4d.forward_cl` computes the same sum
channels-last, ``(B, Hq, Wq, Hk, Wk, C)``, for the cached re-ranker: there the key conv's images
are a free view of the tensor (no copy) and both 2D convs run in oneDNN's channels-last kernels;
only the query conv's input (the key positions it reads) and its output are reordered. On a
CVNet-sized correlation the copies of the channels-first form cost several times the
convolutions themselves (``benchmarks/bench_rerank.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError

__all__ = ["CenterPivotConv4d", "combine_halves", "group_norm_cl"]


def _two(v: int | Sequence[int], what: str) -> tuple[int, int]:
    t = (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)
    if len(t) != 2:
        raise ConfigError(f"CenterPivotConv4d: {what} must be an int or a (query, key) pair, got {v!r}")
    return t  # type: ignore[return-value]


def _grad(*ts: Tensor) -> bool:
    """In-place updates only where autograd is not recording (inference, the re-rank path)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def combine_halves(q: Tensor, k: Tensor, b: int) -> Tensor:
    """Sum of the two 2D-conv outputs as one contiguous channels-last (B, hq, wq, hk, wk, O) tensor.

    ``q``: (B*hk*wk, O, hq, wq), the query conv over each key position; ``k``: (B*hq*wq, O, hk, wk),
    the key conv over each query position (either memory format)."""
    o, hq, wq = q.shape[1:]
    hk, wk = k.shape[2:]
    kk = k.permute(0, 2, 3, 1).reshape(b, hq, wq, hk, wk, o).contiguous()
    qq = q.permute(0, 2, 3, 1).reshape(b, hk, wk, hq, wq, o).permute(0, 3, 4, 1, 2, 5)
    return kk + qq if _grad(q, k) else kk.add_(qq)


STATS_ROWS = 4096  # positions per chunk of the GroupNorm statistics: the squares stay in cache


def group_norm_cl(x: Tensor, norm: nn.GroupNorm, relu: bool = True) -> Tensor:
    """``norm`` (an affine ``nn.GroupNorm``) on a contiguous channels-last (B, ..., C) tensor, then ReLU:
    the statistics of GroupNorm (biased variance over each group's channels and every position),
    without reordering the tensor to channels-first; in place unless autograd records.

    Why by hand: a reduction over the positions of a channels-last tensor is slow in one call
    (strided); per-channel sums and sums of squares over chunks of positions, accumulated in
    float64 and combined per group, are one fast pass."""
    b, c = x.shape[0], x.shape[-1]
    g = norm.num_groups
    v = x.reshape(b, -1, c)
    n = v.shape[1] * (c // g)
    if _grad(x, norm.weight):
        var, mean = torch.var_mean(v.view(b, -1, g, c // g), dim=(1, 3), keepdim=True, correction=0)
        var, mean = var.view(b, 1, g, 1).expand(b, 1, g, c // g), mean.view(b, 1, g, 1).expand(b, 1, g, c // g)
    else:
        s1 = torch.zeros(b, c, dtype=torch.float64, device=x.device)
        s2 = torch.zeros_like(s1)
        buf: Tensor | None = None
        for ch in v.split(STATS_ROWS, dim=1):
            s1 += ch.sum(1, dtype=torch.float64)
            buf = torch.mul(ch, ch, out=buf) if buf is not None and buf.shape == ch.shape else ch * ch
            s2 += buf.sum(1, dtype=torch.float64)
        mean64 = s1.view(b, g, -1).sum(-1, keepdim=True) / n
        var64 = (s2.view(b, g, -1).sum(-1, keepdim=True) / n - mean64 ** 2).clamp_(min=0)
        mean = mean64.to(x.dtype).expand(b, g, c // g).reshape(b, 1, g, c // g)
        var = var64.to(x.dtype).expand(b, g, c // g).reshape(b, 1, g, c // g)
    scale = (torch.rsqrt(var + norm.eps) * norm.weight.view(1, 1, g, c // g)).reshape(b, 1, c)
    shift = norm.bias.view(1, 1, c) - mean.reshape(b, 1, c) * scale
    if _grad(x, norm.weight):
        y = (v * scale + shift).view_as(x)
        return torch.relu(y) if relu else y
    torch.addcmul(shift, v, scale, out=v)
    return x.relu_() if relu else x


class CenterPivotConv4d(nn.Module):
    """``y = query_conv(x at strided key positions) + key_conv(x at strided query positions)``.

    ``kernel_size`` and ``stride`` are an int (both halves) or a (query, key) pair; the same value
    applies to height and width within a half.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, bias: bool = True) -> None:
        super().__init__()
        kq, kk = _two(kernel_size, "kernel_size")
        self.stride = _two(stride, "stride")
        if kq % 2 == 0 or kk % 2 == 0 or min(kq, kk) < 1 or min(self.stride) < 1:
            raise ConfigError(f"CenterPivotConv4d: kernel sizes must be odd and strides positive, got "
                              f"kernel_size={kernel_size!r}, stride={stride!r}")
        self.query_conv = nn.Conv2d(in_channels, out_channels, kq, stride=self.stride[0], padding=kq // 2, bias=bias)
        self.key_conv = nn.Conv2d(in_channels, out_channels, kk, stride=self.stride[1], padding=kk // 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, Hq, Wq, Hk, Wk) -> (B, O, hq, wq, hk, wk)."""
        if x.dim() != 6:
            raise InputError(f"CenterPivotConv4d: expected (B, C, Hq, Wq, Hk, Wk), got shape {tuple(x.shape)}")
        sq, sk = self.stride
        b, c = x.shape[:2]
        # query-dim conv, one 2D image per (batch, key position): (B*hk*wk, C, Hq, Wq)
        xk = x[..., ::sk, ::sk] if sk > 1 else x
        hk, wk = xk.shape[-2:]
        q = self.query_conv(xk.permute(0, 4, 5, 1, 2, 3).reshape(b * hk * wk, c, *x.shape[2:4]))
        o, hq, wq = q.shape[1:]
        q = q.view(b, hk, wk, o, hq, wq).permute(0, 3, 4, 5, 1, 2)
        # key-dim conv, one 2D image per (batch, query position): (B*hq*wq, C, Hk, Wk)
        xq = x[:, :, ::sq, ::sq] if sq > 1 else x
        k = self.key_conv(xq.permute(0, 2, 3, 1, 4, 5).reshape(b * hq * wq, c, *x.shape[4:6]))
        k = k.view(b, hq, wq, o, hk, wk).permute(0, 3, 1, 2, 4, 5)
        return (q + k).contiguous()

    def forward_cl(self, x: Tensor) -> Tensor:
        """Channels-last: (B, Hq, Wq, Hk, Wk, C) (any strides) -> contiguous (B, hq, wq, hk, wk, O)."""
        if x.dim() != 6:
            raise InputError(f"CenterPivotConv4d: expected (B, Hq, Wq, Hk, Wk, C), got shape {tuple(x.shape)}")
        sq, sk = self.stride
        b, Hq, Wq, Hk, Wk, c = x.shape
        # key-dim conv, one 2D image per (batch, query position): (B*hq*wq, C, Hk, Wk), channels-last
        xq = x[:, ::sq, ::sq] if sq > 1 else x
        hq, wq = xq.shape[1:3]
        k = self.key_conv(xq.reshape(b * hq * wq, Hk, Wk, c).permute(0, 3, 1, 2))
        # query-dim conv, one 2D image per (batch, key position): (B*hk*wk, C, Hq, Wq), channels-last
        xk = x[:, :, :, ::sk, ::sk] if sk > 1 else x
        hk, wk = xk.shape[3:5]
        xk = xk.permute(0, 3, 4, 1, 2, 5).reshape(b * hk * wk, Hq, Wq, c).contiguous()  # B = 1 may give a view
        q = self.query_conv(xk.permute(0, 3, 1, 2))
        return combine_halves(q, k, b)
