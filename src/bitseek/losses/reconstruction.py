"""Feature reconstruction losses for masked video autoencoders."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bitseek.errors import InputError


class _MeanSquaredError(torch.autograd.Function):
    """``mean((pred - target)²)`` keeping only the difference for backward.

    ``F.mse_loss``'s CPU kernels make a zero-filled gradient buffer, copy it, and reduce without
    BLAS; here the forward is one subtraction and one dot product, the backward one scaled copy of
    the saved difference. Same value and gradient to float rounding.
    """

    @staticmethod
    def forward(ctx: Any, pred: Tensor, target: Tensor) -> Tensor:
        diff = (pred - target).reshape(-1)
        ctx.save_for_backward(diff)
        ctx.shape = pred.shape
        return torch.dot(diff, diff) / diff.numel()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (diff,) = ctx.saved_tensors
        return (diff * (grad * (2.0 / diff.numel()))).reshape(ctx.shape), None


def mse_reconstruction(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements, in float32 (ConMH: raw features, no normalisation).

    Float32 because raw CNN features can be large and half-precision squares overflow.
    """
    if pred.shape != target.shape:
        raise InputError(f"reconstruction: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.numel() == 0:
        raise InputError("reconstruction: empty prediction (no masked frames?)")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return _MeanSquaredError.apply(pred.float(), target.float())
