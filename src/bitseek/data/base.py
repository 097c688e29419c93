"""The contract between data presets and everything downstream.

A dataset preset (registered with ``bitseek.registry.register_dataset``) turns its config into a
:class:`RetrievalData`: torch datasets for training, queries and database, plus label matrices used
only by the evaluator. Items are dicts of tensors: ``{"feats": (T, D)}`` for video features,
``{"image": (3, H, W)}`` for images, always with ``"index"`` (position in its split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset


@dataclass
class RetrievalData:
    """Train / query / database splits and evaluation labels.

    ``database is None`` means the queries are the database (the FCVID all-vs-all protocol).
    Labels are multi-hot matrices (n, classes) or integer class vectors (n,).
    """

    train: Dataset
    query: Dataset
    database: Dataset | None
    query_labels: np.ndarray
    db_labels: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Dataset:
        return self.query if self.database is None else self.database

    @property
    def database_labels(self) -> np.ndarray:
        return self.query_labels if self.db_labels is None else self.db_labels


def load_data(cfg: Any) -> RetrievalData:
    """Build the RetrievalData for a registered dataset config (``cfg.name`` picks the preset)."""
    from bitseek.registry import DATASETS

    return DATASETS.create(cfg)
