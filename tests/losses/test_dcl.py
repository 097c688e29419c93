"""Debiased contrastive loss against a plain per-anchor loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bitseek.errors import InputError
from bitseek.losses import dcl_loss, negative_mask

torch.set_num_threads(1)


def _loop_dcl(z1: np.ndarray, z2: np.ndarray, t: float, tau: float) -> float:
    """One anchor at a time, in float64, straight from the definition."""
    b = z1.shape[0]
    vecs = [v / max(np.linalg.norm(v), 1e-12) for v in np.concatenate([z1, z2]).astype(np.float64)]
    n = 2 * b - 2
    total = 0.0
    for i in range(2 * b):
        partner = (i + b) % (2 * b)
        pos = math.exp(float(vecs[i] @ vecs[partner]) / t)
        neg = sum(math.exp(float(vecs[i] @ vecs[j]) / t) for j in range(2 * b) if j not in (i, partner))
        ng = max((neg - tau * n * pos) / (1 - tau), n * math.exp(-1 / t))
        total += -math.log(pos / (pos + ng))
    return total / (2 * b)


@pytest.mark.parametrize("b,d,t,tau", [(2, 4, 0.5, 0.1), (5, 8, 0.5, 0.05), (9, 16, 0.2, 0.3), (3, 3, 1.0, 0.0)])
def test_matches_loop(b, d, t, tau):
    rng = np.random.default_rng(b * 100 + d)
    z1 = rng.normal(size=(b, d)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(b, d))).astype(np.float32)
    got = dcl_loss(torch.from_numpy(z1), torch.from_numpy(z2), temperature=t, tau_plus=tau)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(_loop_dcl(z1, z2, t, tau), rel=1e-5, abs=1e-6)


def test_matches_loop_on_mean_binary_codes():
    # The ConMH use: means of ±1 frame codes, with a whole-zero row possible in principle.
    rng = np.random.default_rng(3)
    frames = np.sign(rng.normal(size=(2, 6, 7, 32))).astype(np.float32)
    z1, z2 = frames[0].mean(1), frames[1].mean(1)
    got = dcl_loss(torch.from_numpy(z1), torch.from_numpy(z2), 0.5, 0.1).item()
    assert got == pytest.approx(_loop_dcl(z1, z2, 0.5, 0.1), rel=1e-5)


def test_clamp_is_applied():
    # Identical views; each anchor's negatives point the opposite way (cosine -1), so the
    # debiased estimate goes negative and is clamped at N * exp(-1/t).
    t, tau = 0.5, 0.1
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    n = 2
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + n * math.exp(-1 / t)))
    assert dcl_loss(z, z, t, tau).item() == pytest.approx(expected, rel=1e-6)
    # without the clamp the estimate would have been negative
    assert (n * math.exp(-1 / t) - tau * n * math.exp(1 / t)) / (1 - tau) < 0


def test_batch_of_one_has_no_negatives():
    z1, z2 = torch.randn(1, 8), torch.randn(1, 8)
    assert dcl_loss(z1, z2).item() == 0.0


def test_symmetric_and_scale_invariant():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 10), torch.randn(6, 10)
    torch.testing.assert_close(dcl_loss(z1, z2), dcl_loss(z2, z1))
    torch.testing.assert_close(dcl_loss(z1, z2), dcl_loss(3 * z1, 0.2 * z2))


def test_gradient_is_finite_and_pulls_views_together():
    torch.manual_seed(1)
    z1 = torch.randn(8, 16, requires_grad=True)
    z2 = torch.randn(8, 16)
    loss = dcl_loss(z1, z2)
    loss.backward()
    assert torch.isfinite(z1.grad).all()
    with torch.no_grad():
        moved = z1 - 0.5 * z1.grad
    assert dcl_loss(moved, z2) < loss


def test_negative_mask_layout():
    m = negative_mask(3)
    assert m.shape == (6, 6)
    assert m.sum().item() == 6 * 4
    for i in range(6):
        assert not m[i, i] and not m[i, (i + 3) % 6]


def test_bad_arguments():
    z = torch.randn(4, 8)
    with pytest.raises(InputError, match="views"):
        dcl_loss(z, torch.randn(4, 7))
    with pytest.raises(InputError, match="views"):
        dcl_loss(torch.randn(4), torch.randn(4))
    with pytest.raises(InputError, match="tau_plus"):
        dcl_loss(z, z, tau_plus=1.0)
    with pytest.raises(InputError, match="temperature"):
        dcl_loss(z, z, temperature=0.0)
