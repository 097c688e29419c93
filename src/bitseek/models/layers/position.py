"""Fixed sine-cosine position tables (Transformer / MAE style), as used by ConMH's encoder and decoder."""

from __future__ import annotations

import torch
from torch import Tensor

from bitseek.errors import InputError


def sinusoid_table(positions: int, dim: int) -> Tensor:
    """(positions, dim) float32 table: even columns sin, odd columns cos of ``pos / 10000^(2*(j//2)/dim)``.

    Computed in float64 then rounded once, like the reference (numpy float64 -> FloatTensor), so the
    table is not a source of drift when importing released checkpoints.
    """
    if positions < 1 or dim < 1:
        raise InputError(f"sinusoid_table: positions and dim must be >= 1, got {positions}, {dim}")
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2.0 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()
