"""The model contract the one training engine and the encoder rely on."""

from __future__ import annotations

import abc
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn


class EpochContext:
    """What a model may use in ``before_epoch``: the device and fresh passes over the train data.

    WSCH uses it to encode the training set for k-means before each cycle.
    """

    def __init__(self, device: torch.device, make_loader: Any, engine: Any = None) -> None:
        self.device = device
        self._make_loader = make_loader
        self.engine = engine

    def batches(self, shuffle: bool = False) -> Iterator[dict[str, Tensor]]:
        """Yield training batches already moved to ``device``."""
        for batch in self._make_loader(shuffle=shuffle):
            yield {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class HashModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the deep hashing models.

    Subclasses implement ``training_step`` (returns a dict of scalar losses with key ``"loss"``,
    and no ``.item()`` calls: the engine decides when to sync with the host) and ``encode``
    (returns (B, bits) float codes in {-1, 0, +1} for retrieval).
    """

    bits: int

    @abc.abstractmethod
    def training_step(self, batch: dict[str, Tensor], phase: str = "train") -> dict[str, Tensor]:
        """Losses of one step on ``batch`` for ``phase``."""

    @abc.abstractmethod
    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, bits) codes in {-1, 0, +1}, for retrieval."""

    def epoch_phases(self, epoch: int) -> list[str]:
        """Passes over the training data in this epoch; each gets its own ``phase`` name."""
        return ["train"]

    def before_epoch(self, epoch: int, ctx: EpochContext) -> None:
        """Hook before an epoch's passes (e.g. clustering the codes); default does nothing."""

    def param_groups(self) -> Iterable[Any]:
        """Parameters (or param-group dicts) given to the optimiser."""
        return [p for p in self.parameters() if p.requires_grad]
