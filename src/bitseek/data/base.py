"""The contract between data presets and everything downstream.

A dataset preset (registered with ``bitseek.registry.register_dataset``) turns its config into a
:class:`RetrievalData`: torch datasets for training, queries and database, plus what the evaluator
needs to call a result relevant, used by nothing else. Relevance is either label matrices (items
sharing a label are relevant: video and DeepHash image benchmarks) or a revisitop ground truth
(per-query easy/hard/junk lists: Revisited Oxford/Paris). Items are dicts of tensors:
``{"feats": (T, D)}`` for video features, ``{"image": (3, H, W)}`` for images, always with
``"index"`` (position in its split).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
from torch.utils.data import Dataset

from bitseek.errors import ConfigError

__all__ = ["RetrievalData", "LabelRelevance", "GndRelevance", "Relevance", "load_data"]


@dataclass(frozen=True)
class LabelRelevance:
    """Relevant = shares at least one label. ``database is None``: the queries are the database."""

    query: np.ndarray
    database: np.ndarray | None

    @property
    def searched(self) -> np.ndarray:
        return self.query if self.database is None else self.database


@dataclass(frozen=True)
class GndRelevance:
    """A revisitop ground truth (``bitseek.data.revisited.load_gnd``): scored per protocol E/M/H."""

    gnd: dict[str, Any]


Relevance = Union[LabelRelevance, GndRelevance]


@dataclass
class RetrievalData:
    """Train / query / database splits and what makes a result relevant.

    ``database is None`` means the queries are the database (the FCVID all-vs-all protocol); then
    ``db_labels`` is None too. :attr:`searched` / :attr:`searched_labels` are the split that is
    searched and its labels, never None. Labels are multi-hot matrices (n, classes) or integer
    class vectors (n,); a revisitop dataset gives ``gnd`` instead and no labels.
    """

    train: Dataset
    query: Dataset
    database: Dataset | None
    query_labels: np.ndarray | None
    db_labels: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)
    gnd: dict[str, Any] | None = None

    @property
    def queries_are_database(self) -> bool:
        return self.database is None

    @property
    def searched(self) -> Dataset:
        """The split that is searched: the database, or the queries when they are the database."""
        return self.query if self.database is None else self.database

    @property
    def searched_labels(self) -> np.ndarray:
        """Labels of :attr:`searched` (never None for labelled data)."""
        if self.query_labels is None:
            raise ConfigError("this dataset is scored by a revisitop ground truth, it has no labels")
        return self.query_labels if self.db_labels is None else self.db_labels

    @property
    def relevance(self) -> Relevance:
        """What the evaluator needs: the labels of both sides, or the ground truth (read on first use)."""
        if self.gnd is not None:
            return GndRelevance(self.gnd)
        if self.query_labels is None:
            raise ConfigError("this dataset has neither labels nor a revisitop ground truth; it cannot be scored")
        return LabelRelevance(self.query_labels, self.db_labels)

    # Old names, one of each pair never None and the other optional; kept for existing callers.
    @property
    def db(self) -> Dataset:
        warnings.warn("RetrievalData.db is RetrievalData.searched", DeprecationWarning, stacklevel=2)
        return self.searched

    @property
    def database_labels(self) -> np.ndarray:
        warnings.warn("RetrievalData.database_labels is RetrievalData.searched_labels", DeprecationWarning, stacklevel=2)
        return self.searched_labels


def load_data(cfg: Any) -> RetrievalData:
    """Build the RetrievalData for a registered dataset config (``cfg.name`` picks the preset)."""
    from bitseek.registry import DATASETS

    return DATASETS.create(cfg)
