"""Straight-through hard-sigmoid/round binariser (SSVH ``binary_tanh_unit``, reused by ConMH/WSCH).

Forward: ``2 * round(clip((x + 1) / 2, 0, 1)) - 1`` gives ±1 codes (``round`` is half-to-even,
so ``x == 0`` maps to -1, exactly as ``torch.round`` does in the reference code).

Backward, matching the reference autograd graph element by element: the clip is written there as
in-place index assignments (``y[y > 1] = 1``; ``y[y < 0] = 0``), which zero the gradient of the
overwritten entries, and the rounding passes the gradient straight through except where the clipped
value is exactly 0. The factors 2 (from ``2 * round``) and 1/2 (from ``(x + 1) / 2``) cancel, so
``dL/dx = dL/dout`` where ``0 < (x + 1) / 2 <= 1`` (i.e. ``-1 < x <= 1``) and 0 elsewhere. Note the
asymmetric end points: ``x == 1`` passes gradient, ``x == -1`` does not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _HardSigmoidRoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = (x + 1.0) / 2.0
        # Compare on y (not x) so float rounding at the end points matches the reference exactly.
        ctx.save_for_backward((y > 0) & (y <= 1))
        return 2.0 * torch.round(y.clamp(0.0, 1.0)) - 1.0

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        (passes,) = ctx.saved_tensors
        return grad_out * passes.to(grad_out.dtype)


def binarize_ste(x: Tensor) -> Tensor:
    """±1 codes of ``x`` with the straight-through hard-sigmoid gradient (device-agnostic)."""
    return _HardSigmoidRoundSTE.apply(x)


class BinaryTanh(nn.Module):
    """Module form of :func:`binarize_ste` (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return binarize_ste(x)
