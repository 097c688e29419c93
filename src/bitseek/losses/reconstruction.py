"""Feature reconstruction losses for masked video autoencoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bitseek.errors import InputError


def mse_reconstruction(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements, in float32 (ConMH: raw features, no normalisation).

    Float32 because raw CNN features can be large and half-precision squares overflow.
    """
    if pred.shape != target.shape:
        raise InputError(f"reconstruction: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.numel() == 0:
        raise InputError("reconstruction: empty prediction (no masked frames?)")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return F.mse_loss(pred.float(), target.float())
