"""DeepHash-pytorch list files: ImageNet-100, NUS-WIDE, MS-COCO (and any set in that format).

A list file has one image per line: a path, then the multi-hot label vector as 0/1 integers,
separated by whitespace (``val_image/ILSVRC2012_val_00000007.JPEG 0 0 ... 1 ... 0``). A split
uses three of them, ``train.txt``, ``database.txt`` and ``test.txt`` (the queries).

DeepHash-pytorch joins paths by plain string concatenation, ``data_path + path`` with a
``data_path`` ending in ``/``, so a listed path is *always* taken relative to the image root, even
one that starts with ``/`` (``"/dataset/x/" + "/a.jpg"`` names ``/dataset/x/a.jpg``). We do the
same; lists holding someone else's absolute paths are used with ``strip_prefix`` (drop that prefix)
or ``image_root: /``.

Protocol constants (``config_dataset`` in DeepHash-pytorch, shared by CSCE-Net): ImageNet-100 has
100 classes and is scored with mAP@1000; NUS-WIDE (21 or 81 concepts) and COCO (80) with mAP@5000.
They are given to the evaluator as ``info["topk"]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitseek.data.base import RetrievalData
from bitseek.data.image_config import ImageDataConfig, resolve_dir, retrieval_data, validate_image_config
from bitseek.data.image_dataset import ImageFiles, screen_files
from bitseek.data.transforms import protocol_transforms
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset


@dataclass
class ImageListConfig(ImageDataConfig):
    """A DeepHash-style list-file dataset.

    ``root`` holds the list files; images are looked up under ``image_root`` (default: ``root``;
    a relative value is taken inside ``root``). ``num_classes`` 0 infers the label length from the
    train list, otherwise it is checked. ``topk`` is the protocol's mAP cut-off (0 = all).
    """

    name: str = "image-list"
    image_root: str = ""
    train_list: str = "train.txt"
    database_list: str = "database.txt"
    query_list: str = "test.txt"
    num_classes: int = 0
    strip_prefix: str = ""
    topk: int = 0


@dataclass
class ImageNet100Config(ImageListConfig):
    name: str = "imagenet100"
    num_classes: int = 100
    topk: int = 1000


@dataclass
class NusWideConfig(ImageListConfig):
    name: str = "nuswide"
    num_classes: int = 0  # 21 (nuswide_21) or 81 (nuswide_81_m): inferred from the lists
    topk: int = 5000


@dataclass
class CocoConfig(ImageListConfig):
    name: str = "coco"
    num_classes: int = 80
    topk: int = 5000


def read_image_list(path: str | os.PathLike[str], num_classes: int = 0,
                    strip_prefix: str = "") -> tuple[list[str], np.ndarray]:
    """Parse one list file into (relative paths, uint8 multi-hot labels (n, C)).

    ``num_classes`` > 0 is the expected label length; 0 takes it from the first line. A line of
    another length, a non-0/1 label or a line without labels raises FileFormatError naming the
    file and the line number.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileFormatError(f"{p}: list file not found") from None
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{p}: not a UTF-8 text list file ({e})") from None
    paths: list[str] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    width = int(num_classes)
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 1:
            raise FileFormatError(f"{p}, line {lineno}: {tokens[0]!r} has no label vector")
        if width == 0:
            width = len(tokens) - 1
        if len(tokens) - 1 != width:
            raise FileFormatError(
                f"{p}, line {lineno}: label vector has {len(tokens) - 1} entries, expected {width}"
                + (" (num_classes, or the train list's length)" if num_classes else " (as on the first line)")
            )
        rel = tokens[0]
        if strip_prefix and rel.startswith(strip_prefix):
            rel = rel[len(strip_prefix):]
        paths.append(rel)
        rows.append(tokens[1:])
        lines.append(lineno)
    if not paths:
        raise FileFormatError(f"{p}: list file has no entries")
    try:
        labels = np.asarray(rows, dtype=np.int64)
    except ValueError:
        for lineno, row in zip(lines, rows):
            for tok in row:
                if not tok.lstrip("-").isdigit():
                    raise FileFormatError(f"{p}, line {lineno}: label {tok!r} is not an integer") from None
        raise
    bad = np.nonzero((labels != 0) & (labels != 1))
    if bad[0].size:
        r, c = int(bad[0][0]), int(bad[1][0])
        raise FileFormatError(f"{p}, line {lines[r]}: label {labels[r, c]} at position {c + 1} is not 0 or 1")
    return paths, labels.astype(np.uint8)


def join_image_path(image_root: Path, rel: str) -> str:
    """DeepHash's ``data_path + path``: the listed path is always under the image root."""
    return os.path.join(os.fspath(image_root), rel.lstrip("/"))


def load_image_lists(cfg: ImageListConfig) -> RetrievalData:
    """Build the train / query / database splits of a list-file dataset."""
    validate_image_config(cfg)
    if cfg.num_classes < 0:
        raise ConfigError(f"{cfg.name}.num_classes: must be >= 0 (0 = infer), got {cfg.num_classes}")
    if cfg.topk < 0:
        raise ConfigError(f"{cfg.name}.topk: must be >= 0 (0 = whole database), got {cfg.topk}")
    root = resolve_dir(cfg.root, "")
    if not root.is_dir():
        raise ConfigError(f"{cfg.name}.root: {root} is not a directory")
    image_root = resolve_dir(root, cfg.image_root)
    train_tf, test_tf = protocol_transforms(cfg.image_size, cfg.resize, cfg.hflip)
    num_classes = cfg.num_classes
    splits = {}
    skipped: dict[str, list[tuple[str, str]]] = {}
    checked: dict[str, str | None] = {}  # each file is screened once even if listed in two splits
    for split, fname in (("train", cfg.train_list), ("query", cfg.query_list), ("database", cfg.database_list)):
        list_path = resolve_dir(root, fname)
        rel, labels = read_image_list(list_path, num_classes, cfg.strip_prefix)
        num_classes = labels.shape[1]  # the train list fixes it for the other two
        paths = [join_image_path(image_root, r) for r in rel]
        keep, bad = screen_files(paths, cfg.check, cfg.max_pixels, cfg.on_corrupt,
                                 f"{cfg.name}/{split} ({list_path})", checked)
        if bad:
            skipped[split] = bad
            paths = [q for q, k in zip(paths, keep) if k]
            labels = labels[keep]
        if not paths:
            raise FileFormatError(f"{cfg.name}/{split}: no usable images left in {list_path}")
        splits[split] = ImageFiles(
            paths,
            labels,
            train_tf if split == "train" else test_tf,
            f"{cfg.name}/{split}",
            on_corrupt=cfg.on_corrupt,
            max_pixels=cfg.max_pixels,
            substitute=split == "train",
            seed=cfg.seed,
        )
    info = {
        "name": cfg.name,
        "kind": "image-list",
        "root": str(root),
        "image_root": str(image_root),
        "topk": int(cfg.topk),
        "skipped": skipped,
    }
    return retrieval_data(splits["train"], splits["query"], splits["database"], info)


@register_dataset("imagenet100", ImageNet100Config)
def build_imagenet100(cfg: ImageNet100Config) -> RetrievalData:
    """ImageNet-100 (HashNet/DeepHash lists: 13,000 train, 5,000 queries), mAP@1000."""
    return load_image_lists(cfg)


@register_dataset("nuswide", NusWideConfig)
def build_nuswide(cfg: NusWideConfig) -> RetrievalData:
    """NUS-WIDE (21 or 81 concepts, multi-label), mAP@5000."""
    return load_image_lists(cfg)


@register_dataset("coco", CocoConfig)
def build_coco(cfg: CocoConfig) -> RetrievalData:
    """MS-COCO (80 categories, multi-label), mAP@5000."""
    return load_image_lists(cfg)


@register_dataset("image-list", ImageListConfig)
def build_image_list(cfg: ImageListConfig) -> RetrievalData:
    """Any collection written in the DeepHash list format (your own data, MIRFlickr, VOC...)."""
    return load_image_lists(cfg)


__all__ = [
    "CocoConfig",
    "ImageListConfig",
    "ImageNet100Config",
    "NusWideConfig",
    "join_image_path",
    "load_image_lists",
    "read_image_list",
]
