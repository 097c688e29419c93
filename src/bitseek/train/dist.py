"""Launcher side of DDP: the process group's lifetime, rank guards, and how data is laid out over ranks.

The process group belongs to whoever launched the job (``bitseek train`` under ``torchrun`` opens it
with :func:`process_group`), never to the Trainer: a user's script may train several models, evaluate
in between, or keep its own group.

Data layout (what makes DDP compute what one process computes): with ``data.batch_size = B`` per rank and
``W`` ranks, global batch ``k`` is exactly the ``k``-th batch of ``W * B`` items one process would draw
(same seeded permutation, same loader), and rank ``r`` takes the ``r``-th contiguous block of it. Gathered
in rank order, the ranks' rows are that global batch in its own order. A last global batch too small to
give every rank a row is dropped in training (a rank without a batch would stall the others' gradient
all-reduce); ordered passes (encoding, WSCH's k-means) keep every item exactly once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from bitseek import collective
from bitseek.collective import BatchLayout, contiguous_shard
from bitseek.errors import ConfigError

__all__ = ["launched", "process_group", "is_main", "barrier", "main_only", "contiguous_shard", "global_batches",
           "rank_blocks", "RankPass", "gather_batches", "gather_rng_states", "sync_generator"]


def launched() -> bool:
    """True when started by torchrun (or a SLURM wrapper) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(backend: str | None = None, timeout_s: float = 1800.0) -> Iterator[bool]:
    """Open the process group torchrun describes in the environment, and destroy it on the way out.

    Yields True when a group is active. Without torchrun's variables (one process) nothing happens, and a
    group someone else opened is used as it is and left open.
    """
    if not launched() or not torch.distributed.is_available():
        yield collective.is_distributed()
        return
    if torch.distributed.is_initialized():
        yield True
        return
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {var} is not set; launch with torchrun "
                              "(or export RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield True
    finally:
        if torch.distributed.is_initialized():
            with contextlib.suppress(RuntimeError):  # a rank that failed already broke the group
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def is_main() -> bool:
    return collective.rank() == 0


def barrier() -> None:
    if collective.is_distributed():
        torch.distributed.barrier()


@contextlib.contextmanager
def main_only() -> Iterator[bool]:
    """``with main_only() as me:`` — rank 0 runs the body (``me`` is True), the others wait at its end."""
    try:
        yield is_main()
    finally:
        barrier()


class _Positions(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def global_batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None) -> list[list[int]]:
    """The batches of positions one process's DataLoader draws (so the order is the same by construction)."""
    loader = DataLoader(_Positions(n), batch_size=batch_size, shuffle=shuffle,
                        generator=generator)  # given even when ordered: the loader draws a seed from it
    return [b.tolist() for b in loader]


def rank_blocks(batch: Sequence[int], world: int) -> list[list[int]]:
    """A global batch split into ``world`` contiguous blocks (rank order)."""
    return [list(batch[s.start:s.stop]) for s in (contiguous_shard(len(batch), r, world) for r in range(world))]


class RankPass:
    """This rank's blocks of a sequence of global batches, each yielded with the step's layout set.

    ``drop_ragged`` drops a global batch that cannot give every rank a row (training); otherwise such a
    rank simply has no batch there (ordered passes), and the shared generator is re-synchronised after.
    """

    def __init__(self, dataset: Dataset, batches: list[list[int]], world: int, rank: int, drop_ragged: bool,
                 num_workers: int = 0, pin_memory: bool = False, seed: int = 0) -> None:
        self.rank = rank
        self.plan: list[tuple[int, ...]] = []  # rows per rank of every kept global batch
        mine: list[list[int]] = []
        self.layouts: list[BatchLayout] = []
        for batch in batches:
            blocks = rank_blocks(batch, world)
            sizes = tuple(len(b) for b in blocks)
            if drop_ragged and min(sizes) == 0:
                continue
            self.plan.append(sizes)
            if sizes[rank]:
                mine.append(blocks[rank])
                self.layouts.append(BatchLayout(sizes, rank))
        gen = torch.Generator()
        gen.manual_seed(seed)  # the loader's worker seeds come from here, not from torch's global generator
        self.loader = DataLoader(dataset, batch_sampler=mine, num_workers=num_workers, pin_memory=pin_memory,
                                 generator=gen)

    def __len__(self) -> int:
        return len(self.layouts)

    def __iter__(self) -> Iterator[Any]:
        for layout, batch in zip(self.layouts, self.loader):
            with collective.use_layout(layout):
                yield batch


def gather_batches(plan: list[tuple[int, ...]], outputs: list[Tensor]) -> list[Tensor]:
    """Every rank's per-block outputs (one row per item) -> each global batch's rows, on every rank."""
    world, me = collective.world(), collective.rank()
    trail: list[Any] = [None] * world
    torch.distributed.all_gather_object(trail, (tuple(outputs[0].shape[1:]), outputs[0].dtype) if outputs else None)
    shape, dtype = next(t for t in trail if t is not None) if any(t is not None for t in trail) else ((), None)
    if dtype is None:
        return []
    device = outputs[0].device if outputs else None
    local = torch.cat(outputs) if outputs else torch.zeros((0, *shape), dtype=dtype, device=device)
    per_rank = tuple(sum(s[r] for s in plan) for r in range(world))
    if local.shape[0] != per_rank[me]:
        raise RuntimeError(f"gather_batches: {local.shape[0]} rows on rank {me}, the pass laid out {per_rank[me]}")
    rows = collective.all_gather_varlen(local, per_rank)
    starts = [sum(per_rank[:r]) for r in range(world)]
    out = []
    for sizes in plan:
        parts = []
        for r in range(world):
            parts.append(rows[starts[r]: starts[r] + sizes[r]])
            starts[r] += sizes[r]
        out.append(torch.cat(parts))
    return out


def gather_rng_states(device: torch.device) -> list[Tensor]:
    """Every rank's default CPU generator state (for rank 0's checkpoint), in rank order."""
    state = torch.get_rng_state()
    if not collective.is_distributed():
        return [state]
    x = state.to(device)
    parts = [torch.zeros_like(x) for _ in range(collective.world())]
    torch.distributed.all_gather(parts, x)
    return [p.cpu() for p in parts]


def sync_generator(gen: torch.Generator, device: torch.device) -> None:
    """Give every rank rank 0's state of ``gen`` (after a pass where some rank drew less)."""
    if not collective.is_distributed():
        return
    x = gen.get_state().to(device)
    torch.distributed.broadcast(x, src=0)
    gen.set_state(x.cpu())
