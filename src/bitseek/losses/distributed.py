"""Contrastive losses over the global batch under DDP: gather embeddings across ranks, gradients to the local part.

A contrastive loss depends on the whole batch (every other row is a negative), so computing it per rank
changes the objective with the world size. ``gather`` concatenates every rank's rows in rank order
(the global batch order the engine's sampler lays out) and is differentiable: its backward sums the
incoming gradients over ranks (every rank computes the same global loss) and keeps this rank's rows.
With DDP averaging parameter gradients over ``W`` ranks, the ``W``-fold sum and the ``1/W`` average
cancel, so each step's gradient equals that of one process on the global batch (the same idea as
pytorch-metric-learning's distributed wrapper; without a process group everything is the identity).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bitseek import collective

__all__ = ["gather", "gather_pairs", "GlobalBatchLoss"]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:  # type: ignore[override]
        ctx.offset = sum(sizes[:rank])
        ctx.rows = x.shape[0]
        return collective.all_gather_varlen(x.contiguous(), sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[ctx.offset: ctx.offset + ctx.rows], None, None


def _sizes(rows: int, device: torch.device) -> tuple[int, ...]:
    lay = collective.batch_layout()
    if lay is not None and lay.local == rows:
        return lay.sizes  # set by the engine for this step: no size exchange
    n = torch.tensor([rows], device=device)
    got = [torch.zeros_like(n) for _ in range(collective.world())]
    torch.distributed.all_gather(got, n)
    return tuple(int(s) for s in got)


def gather(x: Tensor) -> Tensor:
    """(sum of every rank's rows, ...) in rank order; gradients flow back to this rank's rows."""
    if not collective.is_distributed() or collective.world() == 1:
        return x
    return _GatherWithGrad.apply(x, _sizes(x.shape[0], x.device), collective.rank())


def gather_pairs(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Both views gathered, so row i of one still pairs with row i of the other."""
    return gather(z1), gather(z2)


class GlobalBatchLoss:
    """Wrap a pair loss ``fn(z1, z2, **kw)`` so it sees the global batch: ``GlobalBatchLoss(dcl_loss)(z1, z2)``."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn = fn

    def __call__(self, z1: Tensor, z2: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.fn(*gather_pairs(z1, z2), *args, **kwargs)
