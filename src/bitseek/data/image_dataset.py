"""Torch datasets of labelled images, and the screening that keeps labels aligned with images.

Design for damaged files (``on_corrupt``):

* When a split is built, every file is *screened* (``check``: ``none`` = exists, ``header`` = a
  recognised image within ``max_pixels``, ``decode`` = fully decodable). With ``on_corrupt:
  error`` any failure raises one FileFormatError listing the count and the first paths. With
  ``skip`` the failing items are removed from the split **together with their label rows**, and a
  :class:`SkippedImageWarning` reports the count and the paths (also kept in ``RetrievalData.info``).
  Positions, labels and codes therefore always refer to the same images.
* Damage that only shows on full decode (a truncated JPEG passes the header check) is met lazily.
  With ``error`` the load raises naming the path. With ``skip`` a *training* item is replaced by
  the next loadable item of the split, returned with that item's own label and index (never a
  shifted label), and the path is recorded and warned about. A query/database item cannot be
  dropped at that point without misaligning codes and label rows, so it raises with a hint to use
  ``check: decode``, which removes such files up front.
"""

from __future__ import annotations

import abc
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bitseek.data.image_io import (
    CorruptImageError,
    SkippedImageWarning,
    check_image,
    load_image,
)
from bitseek.data.transforms import ImageTransform
from bitseek.errors import ConfigError, FileFormatError, InputError

ON_CORRUPT = ("error", "skip")
_SHOW = 10  # paths named in a message


def _listing(bad: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {p}: {r}" for p, r in bad[:_SHOW]]
    if len(bad) > _SHOW:
        lines.append(f"  ... and {len(bad) - _SHOW} more")
    return "\n".join(lines)


def screen_files(paths: Sequence[str], level: str, max_pixels: int, on_corrupt: str, where: str,
                 cache: dict[str, str | None] | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Check every file; return (keep mask, [(path, reason)] of the failures).

    Raises FileFormatError listing the failures when ``on_corrupt == "error"``; warns with the
    list when it is ``"skip"``. ``cache`` (path -> failure reason or None) lets splits that share
    images (a database containing the training set) check each file once.
    """
    if on_corrupt not in ON_CORRUPT:
        raise ConfigError(f"on_corrupt: must be 'error' or 'skip', got {on_corrupt!r}")
    cache = {} if cache is None else cache
    keep = np.ones(len(paths), dtype=bool)
    bad: list[tuple[str, str]] = []
    for i, p in enumerate(paths):
        if p not in cache:
            try:
                check_image(p, level, max_pixels)  # type: ignore[arg-type]
                cache[p] = None
            except CorruptImageError as e:
                cache[p] = e.reason
        reason = cache[p]
        if reason is not None:
            keep[i] = False
            bad.append((p, reason))
    if bad and on_corrupt == "error":
        raise FileFormatError(
            f"{where}: {len(bad)} of {len(paths)} images are unusable (set on_corrupt: skip to leave "
            f"them out):\n{_listing(bad)}"
        )
    if bad:
        warnings.warn(
            f"{where}: skipped {len(bad)} of {len(paths)} unusable images:\n{_listing(bad)}",
            SkippedImageWarning,
            stacklevel=2,
        )
    return keep, bad


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one item's augmentation, independent of loading order and workers."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


class LabelledImages(Dataset, abc.ABC):
    """Base: items ``{"image": (3,H,W) float32, "label": (C,) float32 multi-hot, "index": int}``.

    Augmentation randomness: until :meth:`set_epoch` is called, train transforms draw from torch's
    global RNG (reproducible under ``torch.manual_seed`` and the DataLoader's worker seeding);
    after ``set_epoch(e)`` each item draws from its own generator seeded by (seed, e, index), so the
    crops do not depend on the loading order or number of workers.
    """

    def __init__(self, labels: np.ndarray, transform: ImageTransform, split: str, seed: int = 0) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise InputError(f"{split}: labels must be a (n, classes) multi-hot matrix, got shape {labels.shape}")
        self.labels = labels.astype(np.float32)
        self._label_t = torch.from_numpy(self.labels)
        self.transform = transform
        self.split = split
        self.seed = int(seed)
        self.epoch: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    def set_epoch(self, epoch: int) -> None:
        """Switch to per-item generators for this epoch (see class docstring)."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator | None:
        if self.epoch is None or not self.transform.random:
            return None
        return item_generator(self.seed, self.epoch, index)

    @abc.abstractmethod
    def _load(self, index: int) -> tuple[Image.Image, int]:
        """Decoded RGB image for ``index`` and the index it really came from."""

    def _check_index(self, index: Any) -> int:
        i = int(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.split}: index {index} out of range for {n} items")
        return i

    def __getitem__(self, index: Any) -> dict[str, Any]:
        img, j = self._load(self._check_index(index))
        image = self.transform(img, self._generator(j))
        return {"image": image, "label": self._label_t[j].clone(), "index": j}


class ImageFiles(LabelledImages):
    """Images on disk, decoded lazily and safely (see the module docstring for damaged files)."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, transform: ImageTransform, split: str,
                 *, on_corrupt: str = "error", max_pixels: int, substitute: bool = False,
                 seed: int = 0) -> None:
        super().__init__(labels, transform, split, seed)
        if len(paths) != len(self):
            raise InputError(f"{split}: {len(paths)} paths but {len(self)} label rows")
        if on_corrupt not in ON_CORRUPT:
            raise ConfigError(f"on_corrupt: must be 'error' or 'skip', got {on_corrupt!r}")
        self.paths = [os.fspath(p) for p in paths]
        self.on_corrupt = on_corrupt
        self.max_pixels = int(max_pixels)
        self.substitute = bool(substitute)
        self.skipped: dict[str, str] = {}  # paths met damaged at load time (this process)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        n = len(self)
        for step in range(n):
            j = (index + step) % n
            try:
                return load_image(self.paths[j], self.max_pixels), j
            except CorruptImageError as e:
                if self.on_corrupt == "error":
                    raise CorruptImageError(
                        e.path, f"{e.reason} [{self.split} item {j}; set on_corrupt: skip and check: decode "
                        "to leave such files out]"
                    ) from None
                if not self.substitute:
                    raise CorruptImageError(
                        e.path, f"{e.reason} [{self.split} item {j}: a query/database image cannot be skipped "
                        "after its labels were fixed; use check: decode so it is removed when the split is built]"
                    ) from None
                if e.path not in self.skipped:
                    self.skipped[e.path] = e.reason
                    warnings.warn(
                        f"{self.split}: skipped damaged image {e.path} ({e.reason}); using the next item "
                        f"instead ({len(self.skipped)} skipped so far in this process)",
                        SkippedImageWarning,
                        stacklevel=3,
                    )
        raise FileFormatError(f"{self.split}: none of the {n} images could be decoded")


class ImageArrays(LabelledImages):
    """Images held in memory as uint8 (n, H, W, 3) arrays (CIFAR batches)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: ImageTransform, split: str,
                 seed: int = 0) -> None:
        super().__init__(labels, transform, split, seed)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or images.shape[0] != len(self):
            raise InputError(
                f"{split}: images must be uint8 (n, H, W, 3) with n={len(self)}, got {images.dtype} {images.shape}"
            )
        self.images = images

    def _load(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), index


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer class ids (n,) -> float32 one-hot (n, num_classes)."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise InputError(f"class ids must lie in [0, {num_classes}), got range [{classes.min()}, {classes.max()}]")
    out = np.zeros((classes.shape[0], num_classes), dtype=np.float32)
    out[np.arange(classes.shape[0]), classes] = 1.0
    return out


__all__ = [
    "ImageArrays",
    "ImageFiles",
    "LabelledImages",
    "ON_CORRUPT",
    "item_generator",
    "one_hot",
    "screen_files",
]
