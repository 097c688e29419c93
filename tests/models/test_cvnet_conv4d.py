"""Center-pivot 4D convolution against a naive sum written out here (float64 loops over the kernel)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bitseek.errors import ConfigError, InputError
from bitseek.models.layers.conv4d import CenterPivotConv4d

torch.set_num_threads(1)


def naive_center_pivot(x: torch.Tensor, wq: torch.Tensor, bq: torch.Tensor, wk: torch.Tensor, bk: torch.Tensor,
                       sq: int, sk: int) -> torch.Tensor:
    """y[b,o,i,j,m,n] = sum_{c,u,v} wq[o,c,u,v] x[b,c,i*sq+u-p,j*sq+v-p,m*sk,n*sk] + bq[o]
                      + sum_{c,u,v} wk[o,c,u,v] x[b,c,i*sq,j*sq,m*sk+u-p,n*sk+v-p] + bk[o]  (zero padding)."""
    x = x.double()
    b, c, hq, wq_, hk, wk_ = x.shape
    o, _, kq, _ = wq.shape
    kk = wk.shape[-1]
    oq = [range(0, hq, sq), range(0, wq_, sq)]
    ok = [range(0, hk, sk), range(0, wk_, sk)]
    y = torch.zeros(b, o, len(oq[0]), len(oq[1]), len(ok[0]), len(ok[1]), dtype=torch.float64)
    pq, pk = kq // 2, kk // 2
    for i, qi in enumerate(oq[0]):
        for j, qj in enumerate(oq[1]):
            for m, ki in enumerate(ok[0]):
                for n, kj in enumerate(ok[1]):
                    acc = (bq.double() + bk.double())[:, None].expand(o, b)  # (out, batch)
                    for u in range(kq):
                        for v in range(kq):
                            a, bb = qi + u - pq, qj + v - pq
                            if 0 <= a < hq and 0 <= bb < wq_:
                                acc = acc + wq[:, :, u, v].double() @ x[:, :, a, bb, ki, kj].T
                    for u in range(kk):
                        for v in range(kk):
                            a, bb = ki + u - pk, kj + v - pk
                            if 0 <= a < hk and 0 <= bb < wk_:
                                acc = acc + wk[:, :, u, v].double() @ x[:, :, qi, qj, a, bb].T
                    y[:, :, i, j, m, n] = acc.T
    return y


@pytest.mark.parametrize("kernel, stride, shape", [
    (3, 1, (2, 3, 4, 5, 3, 4)),
    (3, 2, (1, 2, 5, 4, 6, 3)),
    (5, 2, (1, 3, 5, 6, 4, 5)),
    ((3, 5), (1, 2), (1, 2, 4, 4, 5, 5)),
])
def test_center_pivot_matches_naive_sum(kernel, stride, shape) -> None:
    torch.manual_seed(0)
    conv = CenterPivotConv4d(shape[1], 4, kernel, stride)
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_()
    x = torch.randn(*shape)
    got = conv(x)
    want = naive_center_pivot(x, conv.query_conv.weight, conv.query_conv.bias, conv.key_conv.weight,
                              conv.key_conv.bias, conv.stride[0], conv.stride[1])
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_strided_output_has_ceil_positions() -> None:
    conv = CenterPivotConv4d(9, 16, 5, 2)
    y = conv(torch.randn(1, 9, 7, 6, 5, 8))
    assert y.shape == (1, 16, 4, 3, 3, 4) and y.is_contiguous()


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="odd"):
        CenterPivotConv4d(2, 2, 4)
    with pytest.raises(InputError, match="Hq, Wq, Hk, Wk"):
        CenterPivotConv4d(2, 2, 3)(torch.randn(1, 2, 3, 3))
    with pytest.raises(ConfigError):
        F.relu(CenterPivotConv4d(2, 2, 3, stride=(1, 2, 3))(torch.randn(1, 2, 3, 3, 3, 3)))


def test_channels_last_forward_and_group_norm_match_the_channels_first_modules() -> None:
    from bitseek.models.layers.conv4d import group_norm_cl

    torch.manual_seed(3)
    conv = CenterPivotConv4d(5, 8, 3, 2)
    gn = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2.0)
        gn.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 5, 5, 6, 7, 4) * 2 + 1
    ref = F.relu(gn(conv(x)))  # channels-first modules
    for grad in (False, True):  # inference (in place) and training (autograd) branches
        with torch.set_grad_enabled(grad):
            y = group_norm_cl(conv.forward_cl(x.permute(0, 2, 3, 4, 5, 1)), gn)
        torch.testing.assert_close(y.permute(0, 5, 1, 2, 3, 4), ref, atol=1e-5, rtol=1e-5)
        assert y.requires_grad == grad
    y.sum().backward()  # the training path has gradients for every weight
    assert conv.query_conv.weight.grad is not None and gn.weight.grad is not None
