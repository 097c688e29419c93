"""The chunked SSD scan against the literal per-step recurrence, and the Mamba-2 block's wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bitseek.errors import InputError
from bitseek.models.layers.ssd import SSD, Mamba2Block, RMSNorm, segsum, ssd_reference, ssd_scan

torch.set_num_threads(1)


def _inputs(b=2, l=13, h=4, p=3, g=1, n=5, seed=0, with_state=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, l, h, generator=gen))
    A = -torch.rand(h, generator=gen) * 4 - 0.1
    B = torch.randn(b, l, g, n, generator=gen)
    C = torch.randn(b, l, g, n, generator=gen)
    s0 = torch.randn(b, h, p, n, generator=gen) if with_state else None
    return x, dt, A, B, C, s0


@pytest.mark.parametrize("chunk", [0, 1, 2, 4, 5, 13, 20])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_scan_matches_recurrence(chunk, groups):
    x, dt, A, B, C, s0 = _inputs(g=groups, with_state=True)
    y_ref, h_ref = ssd_reference(x, dt, A, B, C, initial_state=s0)
    y, h = ssd_scan(x, dt, A, B, C, chunk_size=chunk, initial_state=s0)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=2e-5, rtol=1e-4)
    y_only, none = ssd_scan(x, dt, A, B, C, chunk_size=chunk, initial_state=s0, return_final_state=False)
    assert none is None
    torch.testing.assert_close(y_only, y)
    # without an initial state and with one chunk the scan skips the states entirely
    y0, _ = ssd_reference(x, dt, A, B, C)
    y0_fast, none = ssd_scan(x, dt, A, B, C, chunk_size=chunk, return_final_state=False)
    assert none is None
    torch.testing.assert_close(y0_fast, y0, atol=2e-5, rtol=1e-4)


@settings(max_examples=15, deadline=None)
@given(l=st.integers(1, 17), chunk=st.integers(0, 9), heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 99))
def test_scan_matches_recurrence_any_shape(l, chunk, heads, seed):
    x, dt, A, B, C, _ = _inputs(b=1, l=l, h=heads, p=2, n=3, seed=seed)
    y_ref, h_ref = ssd_reference(x, dt, A, B, C)
    y, h = ssd_scan(x, dt, A, B, C, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=2e-5, rtol=1e-4)


def test_scan_state_carries_across_calls():
    """Splitting a sequence in two and passing the state on equals one pass (the recurrence's meaning)."""
    x, dt, A, B, C, _ = _inputs(l=12)
    y_all, h_all = ssd_scan(x, dt, A, B, C, chunk_size=5)
    y1, h1 = ssd_scan(x[:, :7], dt[:, :7], A, B[:, :7], C[:, :7])
    y2, h2 = ssd_scan(x[:, 7:], dt[:, 7:], A, B[:, 7:], C[:, 7:], initial_state=h1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_all, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(h2, h_all, atol=2e-5, rtol=1e-4)


def test_scan_gradients_match_recurrence():
    x, dt, A, B, C, _ = _inputs(l=9)
    leaves = [t.clone().requires_grad_(True) for t in (x, dt, A, B, C)]
    ssd_scan(*leaves, chunk_size=4)[0].square().sum().backward()
    grads = [t.grad.clone() for t in leaves]
    leaves_ref = [t.clone().requires_grad_(True) for t in (x, dt, A, B, C)]
    ssd_reference(*leaves_ref)[0].square().sum().backward()
    for got, ref in zip(grads, [t.grad for t in leaves_ref]):
        torch.testing.assert_close(got, ref.float(), atol=1e-3, rtol=1e-3)


def test_segsum_is_log_of_cumulative_decay():
    a = torch.tensor([0.3, -1.0, 2.0, 0.5])
    s = segsum(a)
    for i in range(4):
        for j in range(4):
            want = a[j + 1: i + 1].sum() if j <= i else torch.tensor(float("-inf"))
            assert torch.isclose(s[i, j], want) or (torch.isinf(want) and torch.isinf(s[i, j]))


def test_ssd_module_equals_recurrence_and_chunk_invariant():
    torch.manual_seed(0)
    layer = SSD(64, d_state=8, headdim=16)
    x = torch.randn(3, 11, 64)
    xh, dt, A, B, C = layer.parameters_for_scan(x)
    y_ref, _ = ssd_reference(xh, dt, A, B, C)
    want = (y_ref + xh * layer.D[:, None]).reshape(x.shape)
    torch.testing.assert_close(layer(x), want, atol=2e-5, rtol=1e-4)
    for chunk in (1, 3, 11, 64):
        layer.chunk_size = chunk
        torch.testing.assert_close(layer(x), want, atol=2e-5, rtol=1e-4)


def test_mamba_block_is_causal_and_residual():
    torch.manual_seed(0)
    block = Mamba2Block(32, d_state=4, headdim=16)
    x = torch.randn(2, 10, 32)
    y = block(x)
    x2 = x.clone()
    x2[:, 6:] += torch.randn(2, 4, 32)  # change only the future
    y2 = block(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:])
    with torch.no_grad():  # zero output projection -> identity (residual)
        block.out_proj.weight.zero_()
        block.out_proj.bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_mamba_block_shapes_follow_reference_layout():
    block = Mamba2Block(256, d_state=64, headdim=128)
    assert block.in_proj.weight.shape == (1024, 256)  # H -> 2 * (2H): x and gate
    assert block.conv.weight.shape == (512, 2, 4)  # groups = H over 2H channels
    assert block.ssd.x_proj.weight.shape == (4 + 128, 512)  # dt per head, B, C
    assert block.ssd.A_log.shape == block.ssd.D.shape == block.ssd.dt_bias.shape == (4,)
    assert torch.all((-block.ssd.A_log.exp() <= -1) & (-block.ssd.A_log.exp() >= -16))


def test_rmsnorm():
    norm = RMSNorm(4, eps=0.0)
    x = torch.tensor([[3.0, -3.0, 3.0, -3.0]])
    torch.testing.assert_close(norm(x), torch.tensor([[1.0, -1.0, 1.0, -1.0]]))


def test_scan_under_bf16_autocast_stays_accurate():
    torch.manual_seed(0)
    layer = SSD(64, d_state=8, headdim=16)
    x = torch.randn(2, 9, 64)
    want = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.1 * want.abs().max()


def test_bad_inputs_raise():
    x, dt, A, B, C, _ = _inputs()
    with pytest.raises(InputError, match="dt must be"):
        ssd_scan(x, dt[:, :-1], A, B, C)
    with pytest.raises(InputError, match="chunk_size"):
        ssd_scan(x, dt, A, B, C, chunk_size=-1)
    with pytest.raises(InputError, match="multiple of groups"):
        ssd_scan(x, dt, A, B.repeat(1, 1, 3, 1), C.repeat(1, 1, 3, 1))
    with pytest.raises(InputError, match="initial_state"):
        ssd_scan(x, dt, A, B, C, initial_state=torch.zeros(1, 1, 1, 1))
    with pytest.raises(InputError, match="multiple of headdim"):
        SSD(100, headdim=16)
    with pytest.raises(InputError, match="expected"):
        SSD(64, d_state=8, headdim=16)(torch.randn(2, 3, 32))
