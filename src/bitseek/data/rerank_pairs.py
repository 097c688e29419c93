"""Training pairs for CVNet's re-ranker: positives, hard negatives, Hide-and-Seek masks and their curriculum.

The CVNet paper trains the re-ranker (backbone frozen) with a binary cross-entropy on
(query, positive) and (query, negative) pairs, where positives show the same landmark and negatives
are *hard*: images of other landmarks that the global descriptor ranks highest for the query. A
curriculum raises the share of hard negatives and the Hide-and-Seek probability over training.

Here, every epoch, each *anchor* (an image whose landmark has at least two images) gives exactly one
positive pair (another image of its landmark) and one negative pair: with the epoch's hard ratio
``r`` the negative is drawn from the anchor's ``hard_k`` most similar images of other landmarks
(:func:`mine_hard_negatives`), else from all images of other landmarks. Hide-and-Seek (Singh & Lee,
ICCV 2017) is applied to each image of a pair with the epoch's probability ``p``: its grid of
``hide_grid x hide_grid`` cells loses each cell with ``hide_cell_prob``; the dataset hands out the
cell masks and the model zeroes those cells of the frozen backbone's map (:func:`apply_cell_mask`).
Both ``r`` and ``p`` ramp linearly from their first to their last value over the run
(:class:`Curriculum`). Every draw comes from a generator seeded by (seed, epoch[, index]), so a
resumed run draws the same pairs and masks as an uninterrupted one, whatever the loader order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from bitseek.data.image_dataset import item_generator
from bitseek.data.image_folder import IMAGE_EXTENSIONS, scan_image_folder
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset

__all__ = ["Curriculum", "RerankPairs", "RerankPairsConfig", "TrainImages", "apply_cell_mask", "draw_pairs",
           "hide_and_seek_mask", "linear_ramp", "mine_hard_negatives", "scan_landmark_folder"]


def linear_ramp(start: float, end: float, epoch: int, epochs: int) -> float:
    """``start`` at epoch 0, ``end`` at the last epoch, linear in between (one epoch: ``start``)."""
    if epochs <= 1:
        return float(start)
    t = min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return float(start + (end - start) * t)


@dataclass(frozen=True)
class Curriculum:
    """The hard-negative ratio and the Hide-and-Seek probability of each epoch of a run of ``epochs``."""

    hard_ratio: tuple[float, float] = (0.0, 1.0)
    hide_prob: tuple[float, float] = (0.0, 0.5)
    epochs: int = 1

    def __post_init__(self) -> None:
        for key in ("hard_ratio", "hide_prob"):
            v = getattr(self, key)
            if len(v) != 2 or not all(0.0 <= float(x) <= 1.0 for x in v):
                raise ConfigError(f"data.{key}: two probabilities [first epoch, last epoch] in [0, 1], got {list(v)}")

    def at(self, epoch: int) -> tuple[float, float]:
        """(hard-negative ratio, Hide-and-Seek probability) of ``epoch``."""
        return (linear_ramp(*self.hard_ratio, epoch, self.epochs), linear_ramp(*self.hide_prob, epoch, self.epochs))


def mine_hard_negatives(descriptors: Tensor | np.ndarray, labels: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices: for every image, the ``k`` images of *other* landmarks with the highest
    inner product of global descriptors, most similar first (fewer negatives than ``k``: k shrinks)."""
    d = torch.as_tensor(np.asarray(descriptors, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if d.dim() != 2 or d.shape[0] != y.shape[0]:
        raise ConfigError(f"mine_hard_negatives: need (N, D) descriptors and N labels, got {tuple(d.shape)} "
                          f"and {tuple(y.shape)}")
    others = int((y.unsqueeze(0) != y.unsqueeze(1)).sum(1).min()) if len(y) else 0
    k = min(int(k), others)
    if k < 1:
        raise FileFormatError("hard-negative mining needs at least two landmarks")
    sims = d @ d.T
    sims[y.unsqueeze(0) == y.unsqueeze(1)] = float("-inf")
    return sims.topk(k, dim=1).indices.numpy().astype(np.int64)


def draw_pairs(labels: np.ndarray, hard: np.ndarray, ratio: float, g: np.random.Generator) -> np.ndarray:
    """(2A, 3) rows ``(query, key, target)`` with ``is_hard`` as a 4th column: one positive and one
    negative pair per anchor (an image whose landmark has >= 2 images), in anchor order."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    anchors = [i for i in range(n) if len(members[int(labels[i])]) >= 2]
    if not anchors:
        raise FileFormatError("re-ranker training needs a landmark with at least two images (positive pairs)")
    rows = np.empty((2 * len(anchors), 4), dtype=np.int64)
    for j, a in enumerate(anchors):
        same = members[int(labels[a])]
        p = same[same != a][g.integers(len(same) - 1)]
        is_hard = bool(g.random() < ratio)
        if is_hard:
            neg = hard[a][g.integers(hard.shape[1])]
        else:
            other = np.flatnonzero(labels != labels[a])
            neg = other[g.integers(len(other))]
        rows[2 * j] = (a, p, 1, 0)
        rows[2 * j + 1] = (a, neg, 0, int(is_hard))
    return rows


def hide_and_seek_mask(grid: int, prob: float, cell_prob: float, g: torch.Generator) -> Tensor:
    """(grid, grid) float mask, 1 = kept: with probability ``prob`` each cell is hidden with ``cell_prob``."""
    if float(torch.rand(1, generator=g)) >= prob:
        return torch.ones(grid, grid)
    return (torch.rand(grid, grid, generator=g) >= cell_prob).float()


def apply_cell_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Zero the hidden cells: (B, C, H, W) maps x (B, g, g) cell masks (nearest upsampling to H x W)."""
    m = F.interpolate(masks.to(maps.dtype).unsqueeze(1), size=maps.shape[-2:], mode="nearest")
    return maps * m


class TrainImages:
    """Training photos read as CVNet's test reads them (OpenCV BGR, BGR ImageNet normalisation),
    resized to ``size x size`` so pairs stack into batches."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths = list(paths)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, i: int) -> Tensor:
        from bitseek.data.revisited import read_bgr
        from bitseek.encode.multiscale import import_cv2, normalise_bgr

        cv2 = import_cv2()
        im = read_bgr(self.paths[i])
        shrink = im.shape[0] * im.shape[1] > self.size * self.size
        im = cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return torch.from_numpy(normalise_bgr(im))


class RerankPairs(Dataset):
    """Pairs of one epoch: ``{"query_<kind>", "key_<kind>", "query_mask", "key_mask", "target", "hard", "index"}``.

    ``source(i)`` gives image ``i`` as the model takes it: a normalised image (``kind="image"``, the
    model runs the frozen backbone) or its cached stage-3 map (``kind="map"``)."""

    def __init__(self, source: Callable[[int], Tensor], labels: np.ndarray, hard: np.ndarray, curriculum: Curriculum,
                 *, kind: str = "map", hide_grid: int = 4, hide_cell_prob: float = 0.5, seed: int = 0) -> None:
        if kind not in ("map", "image"):
            raise ConfigError(f"RerankPairs: kind must be 'map' or 'image', got {kind!r}")
        self.source, self.kind = source, kind
        self.labels = np.asarray(labels, dtype=np.int64)
        self.hard = np.asarray(hard, dtype=np.int64)
        self.curriculum = curriculum
        self.grid, self.cell_prob, self.seed = int(hide_grid), float(hide_cell_prob), int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's pairs (the engine calls it before each pass)."""
        self.epoch = int(epoch)
        self.hard_ratio, self.hide_prob = self.curriculum.at(self.epoch)
        g = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 7])
        self.pairs = draw_pairs(self.labels, self.hard, self.hard_ratio, g)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = int(index)
        q, k, target, hard = (int(v) for v in self.pairs[i])
        g = item_generator(self.seed, self.epoch, i)
        return {f"query_{self.kind}": self.source(q), f"key_{self.kind}": self.source(k),
                "query_mask": hide_and_seek_mask(self.grid, self.hide_prob, self.cell_prob, g),
                "key_mask": hide_and_seek_mask(self.grid, self.hide_prob, self.cell_prob, g),
                "target": target, "hard": hard, "index": i}


def scan_landmark_folder(root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS
                         ) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, landmark ids, landmark names) of ``root/<landmark>/**/<image>`` (sorted)."""
    paths, ids, classes = scan_image_folder(root, list(extensions))
    if len(classes) < 2:
        raise FileFormatError(f"{root}: {len(classes)} landmark folder(s); re-ranker training needs at least 2")
    return paths, np.asarray(ids, dtype=np.int64), list(classes)


@dataclass
class RerankPairsConfig:
    """The ``data`` section of the re-ranker recipes (``bitseek.train.cvnet_rerank``)."""

    name: str = "rerank-pairs"
    root: str = ""  # class-per-folder training photos: root/<landmark>/<image>
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    image_size: int = 512  # square training size
    batch_size: int = 32  # pairs per step
    cache_maps: bool = False  # run the frozen backbone once per image and train on its stored maps (small sets)
    hard_k: int = 10  # hard negatives: the k most similar images of other landmarks (global descriptor)
    hard_ratio: list[float] = field(default_factory=lambda: [0.0, 1.0])  # curriculum: first -> last epoch
    hide_prob: list[float] = field(default_factory=lambda: [0.0, 0.5])  # curriculum of Hide-and-Seek
    hide_grid: int = 4  # cells per side
    hide_cell_prob: float = 0.5  # Hide-and-Seek's per-cell hiding probability
    mine_batch_size: int = 16  # images per forward pass when mining / caching
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ConfigError(f"data.image_size must be >= 32, got {self.image_size}")
        if self.batch_size < 1 or self.mine_batch_size < 1 or self.hard_k < 1 or self.hide_grid < 1:
            raise ConfigError("data.batch_size, data.mine_batch_size, data.hard_k and data.hide_grid must be >= 1")
        if not 0.0 <= self.hide_cell_prob <= 1.0:
            raise ConfigError(f"data.hide_cell_prob must be in [0, 1], got {self.hide_cell_prob}")
        Curriculum(tuple(self.hard_ratio), tuple(self.hide_prob))  # type: ignore[arg-type]  (validates)


@register_dataset("rerank-pairs", RerankPairsConfig)
def load_rerank_pairs(cfg: RerankPairsConfig) -> Any:
    """Refused on its own: the pairs need the global model's descriptors (hard negatives)."""
    raise ConfigError("data.name=rerank-pairs is built with the network it mines hard negatives with; train with "
                      "`bitseek train --config cvnet/rerank-lite0 data.root=DIR model.init=RUN/cvnet` (recipes "
                      "cvnet/rerank-*) or bitseek.train.cvnet_rerank.train_rerank")
