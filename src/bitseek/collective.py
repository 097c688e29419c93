"""Low-level distributed state shared by models, losses and the engine (identity without a process group).

Three things live here because models and losses need them and must not import the engine:

* ``rank()``/``world()``/``is_distributed()`` and ``all_gather_varlen`` (no gradient);
* the *batch layout* of the current step: how many rows of the global batch each rank holds. The
  engine sets it before every step, so gathers need no size exchange (no host sync) and per-sample
  randomness can be drawn for the whole global batch and sliced;
* the *shared generator*: under DDP, the randomness that belongs to the global batch (frame masks,
  WSCH's k-means seed) comes from one generator seeded identically on every rank, so the ranks draw the
  same numbers a single process would draw for the same global batch. Per-rank randomness (dropout,
  CSCE's elastic margins) stays on torch's default generator, seeded per rank by the engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["BatchLayout", "contiguous_shard", "is_distributed", "rank", "world", "all_gather_varlen", "batch_layout", "use_layout",
           "shared_generator", "set_shared_generator", "batch_rand"]


def contiguous_shard(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s block of ``range(n)`` when split into ``world`` contiguous, unpadded blocks."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))


def is_distributed() -> bool:
    """True inside an initialised process group (of any size)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def world() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


@dataclass(frozen=True)
class BatchLayout:
    """Rows of the current global batch held by each rank (rank order = global batch order)."""

    sizes: tuple[int, ...]
    rank: int

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def local(self) -> int:
        return self.sizes[self.rank]


_LAYOUT: BatchLayout | None = None
_SHARED: torch.Generator | None = None


def batch_layout() -> BatchLayout | None:
    """The layout of the step being run, or None (single process, or outside the engine)."""
    return _LAYOUT


@contextlib.contextmanager
def use_layout(layout: BatchLayout | None) -> Iterator[None]:
    global _LAYOUT
    old, _LAYOUT = _LAYOUT, layout
    try:
        yield
    finally:
        _LAYOUT = old


def shared_generator() -> torch.Generator | None:
    """The global-batch generator under DDP, or None (use torch's default generator)."""
    return _SHARED


def set_shared_generator(gen: torch.Generator | None) -> None:
    global _SHARED
    _SHARED = gen


def batch_rand(rows: int, *shape: int, device: torch.device | str | None = None) -> Tensor:
    """Uniform ``(rows, *shape)`` for this rank's rows of the global batch.

    Without a layout (one process) this is ``torch.rand`` on the default generator, so single-process
    numbers do not change. Under DDP every rank draws the whole global batch from the shared generator
    and keeps its own slice: the masks of a row are those one process would draw for it.
    """
    lay = _LAYOUT
    if lay is None or _SHARED is None:
        return torch.rand(rows, *shape, device=device)
    if rows != lay.local:
        raise RuntimeError(f"batch_rand: {rows} rows asked for, the step's layout holds {lay.local} on this rank")
    full = torch.rand(lay.total, *shape, device=_SHARED.device, generator=_SHARED)
    return full[lay.offset: lay.offset + rows].to(device)


def all_gather_varlen(x: Tensor, sizes: tuple[int, ...] | None = None) -> Tensor:
    """Every rank's rows of ``x`` concatenated in rank order (no gradient); identity without DDP.

    ``sizes`` (rows per rank) saves one size exchange when the caller knows them.
    """
    if not is_distributed() or world() == 1:
        return x
    n_world = world()
    if sizes is None:
        n = torch.tensor([x.shape[0]], device=x.device)
        got = [torch.zeros_like(n) for _ in range(n_world)]
        torch.distributed.all_gather(got, n)
        sizes = tuple(int(s) for s in got)
    width = max(sizes) if sizes else 0
    padded = x.new_zeros((width, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in range(n_world)]
    torch.distributed.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, sizes)])
