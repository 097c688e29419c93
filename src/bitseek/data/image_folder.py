"""A plain class-per-folder collection (``root/<class>/**/*.jpg``) with a seeded retrieval split.

Classes are the sorted names of ``root``'s non-hidden sub-folders; images are found recursively
inside each and sorted by path, so the item order never depends on the file system. The split is
stratified by class and deterministic given ``seed``:

* ``query`` images are held out (a fraction of all images if <= 1, else a count);
* ``train`` images are drawn from the rest (a fraction of the non-query images if <= 1, else a
  count; ``train: 1`` trains on all of them);
* the database is all non-query images (``database_includes_train: true``, the DeepHash
  ``cifar10-1`` style) or only those not used for training (``false``, the ``cifar10`` style).

A count is spread over the classes in proportion to their sizes with the largest-remainder rule,
so the totals are exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitseek.data.base import RetrievalData
from bitseek.data.image_config import ImageDataConfig, resolve_dir, retrieval_data, validate_image_config
from bitseek.data.image_dataset import ImageFiles, one_hot, screen_files
from bitseek.data.transforms import protocol_transforms
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset

IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"]


@dataclass
class ImageFolderConfig(ImageDataConfig):
    name: str = "image-folder"
    query: float = 0.1
    train: float = 0.5
    database_includes_train: bool = True
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    topk: int = 0


def scan_image_folder(root: str | os.PathLike[str], extensions: list[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """(sorted image paths, class ids, class names) of a class-per-folder tree."""
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"image-folder root {r} is not a directory")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileFormatError(f"{r}: no class sub-folders (expected root/<class>/<image files>)")
    paths: list[str] = []
    ids: list[int] = []
    for c, name in enumerate(classes):
        found = sorted(
            os.fspath(p) for p in (r / name).rglob("*")
            if p.suffix.lower() in exts and p.is_file() and not any(part.startswith(".") for part in p.relative_to(r).parts)
        )
        if not found:
            raise FileFormatError(f"{r / name}: class folder holds no images with extensions {sorted(exts)}")
        paths.extend(found)
        ids.extend([c] * len(found))
    return paths, np.asarray(ids, dtype=np.int64), classes


def resolve_amount(amount: float, total: int, what: str) -> int:
    """A fraction (<= 1, so 1 means all) of ``total`` rounded, or a whole count (> 1), checked to fit."""
    if amount < 0:
        raise ConfigError(f"{what}: must be >= 0, got {amount}")
    if amount <= 1:
        n = int(round(amount * total))
    else:
        if float(amount) != int(amount):
            raise ConfigError(f"{what}: a count must be a whole number, got {amount}")
        n = int(amount)
    if n > total:
        raise ConfigError(f"{what}: asks for {n} images but only {total} are available")
    return n


def allocate(count: int, sizes: np.ndarray) -> np.ndarray:
    """Split ``count`` over groups proportionally to ``sizes`` (largest remainder, exact total)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if count == 0 or total == 0:
        return np.zeros_like(sizes)
    quota = sizes * count / total
    base = np.minimum(np.floor(quota).astype(np.int64), sizes)
    left = count - int(base.sum())
    order = np.lexsort((np.arange(len(sizes)), -(quota - base)))  # largest remainder, ties by index
    for i in order:
        if left == 0:
            break
        if base[i] < sizes[i]:
            base[i] += 1
            left -= 1
    return base


def folder_split(class_ids: np.ndarray, query: float, train: float, database_includes_train: bool,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, train, database) indices, stratified by class, sorted, deterministic by seed."""
    n = len(class_ids)
    num_classes = int(class_ids.max()) + 1
    members = [np.where(class_ids == c)[0] for c in range(num_classes)]
    sizes = np.array([len(m) for m in members])
    n_query = resolve_amount(query, n, "image-folder.query")
    q_per = allocate(n_query, sizes)
    rest_sizes = sizes - q_per
    n_train = resolve_amount(train, int(rest_sizes.sum()), "image-folder.train")
    t_per = allocate(n_train, rest_sizes)
    rs = np.random.RandomState(seed)
    q, t, rest = [], [], []
    for c, m in enumerate(members):
        m = m[rs.permutation(len(m))]
        q.append(m[: q_per[c]])
        t.append(m[q_per[c] : q_per[c] + t_per[c]])
        rest.append(m[q_per[c] + t_per[c] :])
    qi, ti, ri = (np.sort(np.concatenate(x)) for x in (q, t, rest))
    di = np.sort(np.concatenate((ti, ri))) if database_includes_train else ri
    for name, idx in (("query", qi), ("train", ti), ("database", di)):
        if len(idx) == 0:
            raise ConfigError(f"image-folder: the {name} split is empty ({n} images, query={query}, train={train})")
    return qi, ti, di


def load_image_folder(cfg: ImageFolderConfig) -> RetrievalData:
    validate_image_config(cfg)
    root = resolve_dir(cfg.root, "")
    paths, ids, classes = scan_image_folder(root, cfg.extensions)
    keep, bad = screen_files(paths, cfg.check, cfg.max_pixels, cfg.on_corrupt, f"{cfg.name} ({root})")
    if bad:  # leave damaged files out before splitting, so the split stays stratified
        paths = [p for p, k in zip(paths, keep) if k]
        ids = ids[keep]
        if not paths:
            raise FileFormatError(f"{root}: no usable images")
    qi, ti, di = folder_split(ids, cfg.query, cfg.train, cfg.database_includes_train, cfg.seed)
    labels = one_hot(ids, len(classes))
    train_tf, test_tf = protocol_transforms(cfg.image_size, cfg.resize, cfg.hflip)

    def split(idx: np.ndarray, tag: str) -> ImageFiles:
        return ImageFiles(
            [paths[i] for i in idx], labels[idx], train_tf if tag == "train" else test_tf, f"{cfg.name}/{tag}",
            on_corrupt=cfg.on_corrupt, max_pixels=cfg.max_pixels, substitute=tag == "train", seed=cfg.seed,
        )

    info = {
        "name": cfg.name,
        "kind": "image-folder",
        "root": str(root),
        "topk": int(cfg.topk),
        "class_names": classes,
        "skipped": {"all": bad} if bad else {},
    }
    return retrieval_data(split(ti, "train"), split(qi, "query"), split(di, "database"), info)


@register_dataset("image-folder", ImageFolderConfig)
def build_image_folder(cfg: ImageFolderConfig) -> RetrievalData:
    """Your own labelled photos in class folders, split deterministically for retrieval."""
    return load_image_folder(cfg)


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderConfig",
    "allocate",
    "folder_split",
    "load_image_folder",
    "resolve_amount",
    "scan_image_folder",
]
