"""Fields every image dataset config shares, their validation, and assembling RetrievalData."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitseek.data.base import RetrievalData
from bitseek.data.image_dataset import ON_CORRUPT, LabelledImages
from bitseek.data.image_io import CHECK_LEVELS, DEFAULT_MAX_PIXELS, check_max_pixels
from bitseek.errors import ConfigError


@dataclass
class ImageDataConfig:
    """Shared by all image datasets.

    ``image_size`` is the square crop fed to the network, ``resize`` the shorter side before
    cropping (the DeepHash protocol: 256 then 224). ``on_corrupt`` decides whether an unusable
    image is fatal (``error``) or left out and reported (``skip``); ``check`` is how hard files are
    screened when a split is built (``none`` | ``header`` | ``decode``); ``max_pixels`` refuses
    decompression bombs. ``seed`` fixes splits (where the dataset draws one) and augmentation.
    """

    name: str = ""
    root: str = ""
    batch_size: int = 64
    image_size: int = 224
    resize: int = 256
    on_corrupt: str = "error"
    check: str = "header"
    max_pixels: int = DEFAULT_MAX_PIXELS
    hflip: bool = True
    seed: int = 0


def validate_image_config(cfg: ImageDataConfig) -> None:
    """Raise ConfigError naming the field for any invalid shared value."""
    where = cfg.name or type(cfg).__name__
    if not str(cfg.root).strip():
        raise ConfigError(f"{where}: 'root' is required (the dataset folder)")
    if cfg.batch_size <= 0:
        raise ConfigError(f"{where}.batch_size: must be positive, got {cfg.batch_size}")
    if cfg.image_size <= 0:
        raise ConfigError(f"{where}.image_size: must be positive, got {cfg.image_size}")
    if cfg.resize < cfg.image_size:
        raise ConfigError(
            f"{where}.resize ({cfg.resize}) must be >= image_size ({cfg.image_size}): crops are taken after resizing"
        )
    if cfg.on_corrupt not in ON_CORRUPT:
        raise ConfigError(f"{where}.on_corrupt: must be 'error' or 'skip', got {cfg.on_corrupt!r}")
    if cfg.check not in CHECK_LEVELS:
        raise ConfigError(f"{where}.check: must be one of {', '.join(CHECK_LEVELS)}, got {cfg.check!r}")
    check_max_pixels(cfg.max_pixels, f"{where}.max_pixels")


def resolve_dir(base: str | os.PathLike[str], sub: str) -> Path:
    """``sub`` if absolute, else ``base/sub`` (``base`` itself when ``sub`` is empty)."""
    b = Path(os.path.expanduser(os.fspath(base)))
    if not sub:
        return b
    s = Path(os.path.expanduser(sub))
    return s if s.is_absolute() else b / s


def retrieval_data(train: LabelledImages, query: LabelledImages, database: LabelledImages,
                   info: dict[str, Any]) -> RetrievalData:
    """Bundle splits with their label matrices; the sizes go into ``info`` for reports."""
    for split in (query, database):
        if split.num_classes != train.num_classes:
            raise ConfigError(
                f"{split.split}: {split.num_classes} classes but the train split has {train.num_classes}"
            )
    info = {
        **info,
        "num_classes": train.num_classes,
        "sizes": {"train": len(train), "query": len(query), "database": len(database)},
    }
    return RetrievalData(
        train=train,
        query=query,
        database=database,
        query_labels=query.labels,
        db_labels=database.labels,
        info=info,
    )


__all__ = ["ImageDataConfig", "resolve_dir", "retrieval_data", "validate_image_config"]
