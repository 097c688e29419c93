"""The model contracts the one training engine and the encoder rely on.

Two kinds of output, one engine: a :class:`HashModel` ``encode``s a batch into codes in
``{-1, 0, +1}`` (searched by Hamming distance), an :class:`Embedder` ``embed``s it into float
descriptors (searched by inner product). :func:`output_kind` tells the pipeline which path a
model takes, for deep and closed-form models alike.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Iterator, Literal

import torch
from torch import Tensor, nn


class EpochContext:
    """What a model may use in ``before_epoch``: the device and fresh passes over the train data.

    WSCH uses it to encode the training set for k-means before each cycle.
    """

    def __init__(self, device: torch.device, make_loader: Any, engine: Any = None, gather: Any = None) -> None:
        self.device = device
        self._make_loader = make_loader
        self.engine = engine
        self._gather = gather

    def gather_batches(self, outputs: list[Tensor]) -> list[Tensor]:
        """Per-batch outputs of an ordered pass (one row per item) -> the global batches' outputs.

        Under DDP each rank ran only its block of every global batch; this returns, on every rank, each
        global batch's rows in dataset order. One process: the outputs as they are.
        """
        return list(outputs) if self._gather is None else self._gather(outputs)

    def batches(self, shuffle: bool = False) -> Iterator[dict[str, Tensor]]:
        """Yield training batches already moved to ``device``."""
        for batch in self._make_loader(shuffle=shuffle):
            yield {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class TrainableModel(nn.Module, metaclass=abc.ABCMeta):
    """What the engine trains: ``training_step`` plus optional per-epoch hooks.

    ``training_step`` returns a dict of scalar losses with key ``"loss"`` and makes no ``.item()``
    calls: the engine decides when to sync with the host.
    """

    @abc.abstractmethod
    def training_step(self, batch: dict[str, Tensor], phase: str = "train") -> dict[str, Tensor]:
        """Losses of one step on ``batch`` for ``phase``."""

    def epoch_phases(self, epoch: int) -> list[str]:
        """Passes over the training data in this epoch; each gets its own ``phase`` name."""
        return ["train"]

    def before_epoch(self, epoch: int, ctx: EpochContext) -> None:
        """Hook before an epoch's passes (e.g. clustering the codes); default does nothing."""

    def param_groups(self) -> Iterable[Any]:
        """Parameters (or param-group dicts) given to the optimiser."""
        return [p for p in self.parameters() if p.requires_grad]


class HashModel(TrainableModel):
    """Base class of the deep hashing models: ``encode`` gives (B, bits) codes in {-1, 0, +1}."""

    bits: int

    @abc.abstractmethod
    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, bits) codes in {-1, 0, +1}, for retrieval."""


class Embedder(nn.Module, metaclass=abc.ABCMeta):
    """Base class of real-valued models: ``embed`` gives (B, dim) float32 descriptors.

    Descriptors are ranked by inner product, so a model whose method says so (CVNet, GeM
    descriptors) L2-normalises inside ``embed``; the encoder never changes the values.
    Training is a separate contract: an embedder the engine trains also derives from
    :class:`TrainableModel`, an inference-only one (released weights) does not have to.
    """

    dim: int

    @abc.abstractmethod
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, dim) float32 descriptors, for inner-product retrieval."""


OutputKind = Literal["codes", "features"]


def output_kind(model: Any) -> OutputKind:
    """``"codes"`` for models with ``encode`` (hashing, shallow baselines), ``"features"`` for ``embed``.

    A model with both is a hashing model (its ``embed`` is a diagnostic view of the float
    representation before the sign).
    """
    if isinstance(model, HashModel) or callable(getattr(model, "encode", None)):
        return "codes"
    if isinstance(model, Embedder) or callable(getattr(model, "embed", None)):
        return "features"
    raise TypeError(f"{type(model).__name__} has neither encode() (codes) nor embed() (features)")
