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
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError

__all__ = ["CenterPivotConv4d"]


def _two(v: int | Sequence[int], what: str) -> tuple[int, int]:
    t = (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)
    if len(t) != 2:
        raise ConfigError(f"CenterPivotConv4d: {what} must be an int or a (query, key) pair, got {v!r}")
    return t  # type: ignore[return-value]


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
