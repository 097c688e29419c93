"""Masked-frame reconstruction loss."""

from __future__ import annotations

import pytest
import torch

from bitseek.errors import InputError
from bitseek.losses import mse_reconstruction


def test_mean_over_all_elements():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[0.0, 2.0], [1.0, 1.0]]])
    assert mse_reconstruction(pred, target).item() == pytest.approx((1 + 0 + 4 + 9) / 4)


def test_value_and_gradient_equal_f_mse_loss():
    pred = torch.randn(4, 3, 5, requires_grad=True)
    target = torch.randn(4, 3, 5)
    ours, ref = mse_reconstruction(pred, target), torch.nn.functional.mse_loss(pred, target)
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(3.0 * ours, pred)
    (g_ref,) = torch.autograd.grad(3.0 * ref, pred)
    torch.testing.assert_close(g_ours, g_ref)


def test_half_inputs_do_not_overflow():
    pred = torch.full((2, 3, 4), 300.0, dtype=torch.float16)
    target = torch.zeros(2, 3, 4, dtype=torch.float16)
    out = mse_reconstruction(pred, target)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(90000.0)


def test_errors_name_the_problem():
    with pytest.raises(InputError, match="differ"):
        mse_reconstruction(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(InputError, match="empty"):
        mse_reconstruction(torch.zeros(2, 0, 4), torch.zeros(2, 0, 4))
