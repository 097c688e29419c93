"""Labelled landmark photos for training CVNet's global model: class-per-folder and GLDv2-clean layouts.

* ``landmark-folder``: ``root/<landmark>/**/*.jpg`` (the built-in benchmark's ``train/`` split has it);
  classes are the sorted folder names.
* ``gldv2``: Google Landmarks v2 as it is downloaded: ``<root>/train_clean.csv`` (``landmark_id,images``,
  the images a space-separated list of ids) or ``<root>/train.csv`` (``id,url,landmark_id``, one row per
  image); image ``abcdef...`` lives at ``<root>/train/a/b/c/abcdef....jpg``. Landmark ids are mapped to
  0..C-1 in increasing id order.

Items are ``{"image": (3, S, S) float32, "label": int, "index": int}``: a random resized crop (area
``crop_scale`` of the photo, aspect 3/4..4/3, torchvision's rule with 10 tries and a centre-crop
fallback) resized to ``image_size``, optionally flipped, normalised as CVNet's test does (BGR order,
ImageNet mean/std in BGR order), so training sees what retrieval feeds the network. Each item's draws
come from its own generator (seed, epoch, index) once the engine calls ``set_epoch``, so crops do not
depend on loader order, workers or ranks. Missing files are found up front and refused in one line
(or left out with ``on_missing: skip``).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bitseek.data.base import RetrievalData
from bitseek.data.image_dataset import item_generator
from bitseek.data.image_folder import IMAGE_EXTENSIONS, scan_image_folder
from bitseek.data.image_io import DEFAULT_MAX_PIXELS, load_image
from bitseek.data.transforms import to_normalized_tensor
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset

__all__ = ["GLDv2Config", "LandmarkFolderConfig", "LandmarkImages", "LandmarkTrainTransform", "gldv2_image_path",
           "read_gldv2_csv"]

#: ImageNet statistics in BGR order (CVNet's test normalisation; the same as bitseek.encode.multiscale's)
BGR_MEAN = (0.406, 0.456, 0.485)
BGR_STD = (0.225, 0.224, 0.229)
ON_MISSING = ("error", "skip")


@dataclass(frozen=True)
class LandmarkTrainTransform:
    """PIL RGB photo -> (3, size, size) BGR-normalised tensor through a random resized crop."""

    size: int = 512
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"data.crop_scale must be 0 < min <= max <= 1, got {list(self.scale)}")


    def crop_box(self, w: int, h: int, g: torch.Generator | None) -> tuple[int, int, int, int]:
        area = w * h
        lr = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            a = area * float(torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=g))
            r = math.exp(float(torch.empty(1).uniform_(lr[0], lr[1], generator=g)))
            cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                return left, top, left + cw, top + ch
        side = min(w, h)  # fallback: the centred largest square
        left, top = (w - side) // 2, (h - side) // 2
        return left, top, left + side, top + side

    def __call__(self, img: Image.Image, g: torch.Generator | None = None) -> torch.Tensor:
        if img.mode != "RGB":
            img = img.convert("RGB")
        box = self.crop_box(img.width, img.height, g)
        img = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        arr = np.asarray(img, dtype=np.uint8)
        if self.hflip and bool(torch.rand(1, generator=g) < 0.5):
            arr = arr[:, ::-1]
        return to_normalized_tensor(np.ascontiguousarray(arr[:, :, ::-1]), BGR_MEAN, BGR_STD)


class LandmarkImages(Dataset):
    """Photos with integer landmark labels, decoded lazily (a damaged file raises naming its path)."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: LandmarkTrainTransform, split: str,
                 seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if len(paths) != len(labels):
            raise ConfigError(f"{split}: {len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.split = split
        self.seed = int(seed)
        self.max_pixels = int(max_pixels)
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = int(index)
        g = None if self.epoch is None else item_generator(self.seed, self.epoch, i)
        img = load_image(self.paths[i], self.max_pixels)
        return {"image": self.transform(img, g), "label": int(self.labels[i]), "index": i}


@dataclass
class _LandmarkTrainBase:
    root: str = ""
    image_size: int = 512  # square training crops (the paper's 512)
    crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])  # area fraction of the random crop
    hflip: bool = False
    on_missing: str = "error"  # error | skip
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    batch_size: int = 32

    def check(self) -> None:
        if not self.root:
            raise ConfigError(f"data.root: give the {self.name} folder (data.root=PATH)")  # type: ignore[attr-defined]
        if self.on_missing not in ON_MISSING:
            raise ConfigError(f"data.on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        if len(self.crop_scale) != 2:
            raise ConfigError(f"data.crop_scale: two numbers [min, max], got {self.crop_scale}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")

    def transform(self) -> LandmarkTrainTransform:
        return LandmarkTrainTransform(self.image_size, (float(self.crop_scale[0]), float(self.crop_scale[1])),
                                      hflip=self.hflip)


@dataclass
class LandmarkFolderConfig(_LandmarkTrainBase):
    name: str = "landmark-folder"
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))


@dataclass
class GLDv2Config(_LandmarkTrainBase):
    name: str = "gldv2"
    csv: str = ""  # "" = train_clean.csv if present, else train.csv; or a path (relative to root)


def gldv2_image_path(root: str | os.PathLike[str], image_id: str) -> Path:
    """GLDv2's nested layout: id ``abcdef...`` -> ``root/train/a/b/c/abcdef....jpg``."""
    if len(image_id) < 3:
        raise FileFormatError(f"GLDv2 image id {image_id!r} is shorter than the 3 characters of its folder path")
    return Path(root) / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def read_gldv2_csv(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(image id, landmark id) pairs of ``train_clean.csv`` (landmark_id,images) or ``train.csv`` (id,url,landmark_id)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: GLDv2 CSV not found (expected train_clean.csv or train.csv under data.root)")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        if "landmark_id" in cols and "images" in cols:
            mode = "clean"
        elif "landmark_id" in cols and "id" in cols:
            mode = "rows"
        else:
            raise FileFormatError(f"{p}: needs columns landmark_id,images (train_clean.csv) or id,landmark_id "
                                  f"(train.csv); found {cols}")
        out: list[tuple[str, str]] = []
        for line, row in enumerate(reader, start=2):
            lid = (row.get("landmark_id") or "").strip()
            if not lid:
                raise FileFormatError(f"{p}:{line}: empty landmark_id")
            if mode == "clean":
                out.extend((i, lid) for i in (row.get("images") or "").split())
            else:
                iid = (row.get("id") or "").strip()
                if not iid:
                    raise FileFormatError(f"{p}:{line}: empty id")
                out.append((iid, lid))
    if not out:
        raise FileFormatError(f"{p}: lists no images")
    return out


def _landmark_order(ids: list[str]) -> list[str]:
    """Landmark ids sorted numerically when they all are numbers (GLDv2), else as strings."""
    uniq = set(ids)
    if all(u.isdigit() for u in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def _drop_missing(paths: list[str], labels: list[str], where: str, on_missing: str) -> tuple[list[str], list[str]]:
    keep = [os.path.isfile(p) for p in paths]
    n_bad = keep.count(False)
    if n_bad and on_missing == "error":
        first = paths[keep.index(False)]
        raise FileFormatError(f"{where}: {n_bad} of {len(paths)} listed images are missing (first: {first}); "
                              "complete the download or set data.on_missing=skip")
    if n_bad:
        paths = [p for p, k in zip(paths, keep) if k]
        labels = [lab for lab, k in zip(labels, keep) if k]
        if not paths:
            raise FileFormatError(f"{where}: none of the listed images exist")
    return paths, labels


def _bundle(cfg: _LandmarkTrainBase, paths: list[str], names: list[str], order: list[str],
            info: dict[str, Any]) -> RetrievalData:
    index = {c: i for i, c in enumerate(order)}
    labels = np.asarray([index[n] for n in names], dtype=np.int64)
    if len(order) < 2:
        raise FileFormatError(f"{info['root']}: {len(order)} landmark(s); classification training needs at least 2")
    train = LandmarkImages(paths, labels, cfg.transform(), f"{cfg.name}/train", cfg.seed, cfg.max_pixels)  # type: ignore[attr-defined]
    info = {**info, "num_classes": len(order), "class_names": order, "sizes": {"train": len(paths)},
            "note": "training images only: no query/database split"}
    return RetrievalData(train=train, query=LandmarkImages([], np.zeros(0), cfg.transform(), "none"), database=None,
                         query_labels=None, db_labels=None, info=info)


@register_dataset("landmark-folder", LandmarkFolderConfig)
def load_landmark_folder(cfg: LandmarkFolderConfig) -> RetrievalData:
    """Landmark photos in class folders, all for training (CVNet global/re-rank training)."""
    cfg.check()
    paths, ids, classes = scan_image_folder(cfg.root, cfg.extensions)
    names = [classes[i] for i in ids]
    return _bundle(cfg, paths, names, list(classes),
                   {"name": cfg.name, "kind": "landmark-folder", "root": str(Path(cfg.root))})


@register_dataset("gldv2", GLDv2Config)
def load_gldv2(cfg: GLDv2Config) -> RetrievalData:
    """Google Landmarks v2 (clean) from its CSV and nested image folders, all for training."""
    cfg.check()
    root = Path(cfg.root)
    if not root.is_dir():
        raise ConfigError(f"data.root {root}: not a directory")
    if cfg.csv:
        path = Path(cfg.csv) if Path(cfg.csv).is_absolute() else root / cfg.csv
    else:
        path = root / "train_clean.csv" if (root / "train_clean.csv").is_file() else root / "train.csv"
    pairs = read_gldv2_csv(path)
    paths = [os.fspath(gldv2_image_path(root, i)) for i, _ in pairs]
    names = [lid for _, lid in pairs]
    paths, names = _drop_missing(paths, names, str(path), cfg.on_missing)
    return _bundle(cfg, paths, names, _landmark_order(names),
                   {"name": cfg.name, "kind": "gldv2", "root": str(root), "csv": str(path),
                    "listed": len(pairs), "missing": len(pairs) - len(paths)})
