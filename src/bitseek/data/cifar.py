"""CIFAR-10 from the official python batches, with DeepHash-pytorch's three retrieval splits.

Files: ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch`` (``root`` may be that folder or
its parent). Each is a pickled dict (written by Python 2, so keys come back as bytes) with
``data``: uint8 (10000, 3072) rows of 1024 red, 1024 green, 1024 blue values (32x32 row-major)
and ``labels``: a list of ints. Pickles can run code, so they are read with a *restricted
unpickler* that only resolves numpy's array reconstruction helpers and a few inert builtins.

Splits, as in DeepHash-pytorch ``cifar_dataset``: the 50,000 train and 10,000 test images are pooled
(train batches first, in order), each class's indices are permuted, and per class the first
``q`` go to the queries, the next ``t`` to training and the rest to ``database``:

=============  =======================  ===========  ========================================
name           query (per class)        train        database
=============  =======================  ===========  ========================================
``cifar10``    1,000 (100)              5,000 (500)  54,000: the rest
``cifar10-1``  1,000 (100)              5,000 (500)  59,000: train + the rest
``cifar10-2``  10,000 (1,000)           50,000       50,000: = train
=============  =======================  ===========  ========================================

DeepHash draws the permutations from numpy's unseeded global RNG; we draw them, class 0 to 9 in
the same order, from ``numpy.random.RandomState(seed)``, so the split is the one DeepHash would
produce after ``np.random.seed(seed)``. DeepHash's ``cifar10-2`` queries are therefore *random*
images of the pooled set, not the official test batch; ``query_from_test_batch: true`` gives the
official split instead (queries = test batch, train = database = the 50,000 train images).

DeepHash's CIFAR transform is ``Resize(crop_size)`` only (32 -> 224, no crop, no flip) for all
splits; that is the default here (``augment: false``). ``augment: true`` uses the generic
resize/random-crop/flip pipeline instead. CIFAR is scored with mAP over the whole database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.data.base import RetrievalData
from bitseek.data.image_config import ImageDataConfig, resolve_dir, retrieval_data, validate_image_config
from bitseek.data.image_dataset import ImageArrays, one_hot
from bitseek.data.transforms import ImageTransform, protocol_transforms
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset
from bitseek.safe_pickle import ALLOW_NUMPY_ARRAYS, load_file

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10

#: name -> (query per class, train per class, database rule)
PROTOCOLS: dict[str, tuple[int, int, str]] = {
    "cifar10": (100, 500, "rest"),
    "cifar10-1": (100, 500, "train+rest"),
    "cifar10-2": (1000, 5000, "train"),
}


# --------------------------------------------------------------------------- safe unpickling


def safe_unpickle(path: str | Path) -> Any:
    """Load a CIFAR pickle through :mod:`bitseek.safe_pickle` (numpy arrays and inert builtins only; no
    allocation larger than the file; bytes keys as in the Python 2 files)."""
    return load_file(path, ALLOW_NUMPY_ARRAYS, encoding="bytes")


def _key(d: dict[Any, Any], name: str) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise KeyError(name)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 images (n, 32, 32, 3), int64 labels (n,)), fully validated."""
    p = Path(path)
    obj = safe_unpickle(p)
    if not isinstance(obj, dict):
        raise FileFormatError(f"{p}: expected a pickled dict, got {type(obj).__name__}")
    try:
        data, labels = _key(obj, "data"), _key(obj, "labels")
    except KeyError as e:
        raise FileFormatError(f"{p}: missing key {e.args[0]!r} (not a CIFAR-10 python batch)") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise FileFormatError(f"{p}: 'data' must be a uint8 (n, 3072) array, got {desc}")
    try:
        lab = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise FileFormatError(f"{p}: 'labels' is not a list of integers") from None
    if lab.shape != (data.shape[0],):
        raise FileFormatError(f"{p}: {data.shape[0]} images but labels of shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= NUM_CLASSES):
        raise FileFormatError(f"{p}: labels must lie in 0..{NUM_CLASSES - 1}, got {lab.min()}..{lab.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), lab


def find_batches_dir(root: str | Path) -> Path:
    """``root/cifar-10-batches-py`` or ``root`` itself, whichever holds ``data_batch_1``."""
    r = Path(root).expanduser()
    for cand in (r / "cifar-10-batches-py", r):
        if (cand / TRAIN_BATCHES[0]).is_file():
            return cand
    raise FileFormatError(f"{r}: no CIFAR-10 python batches (expected cifar-10-batches-py/data_batch_1 or data_batch_1)")


def load_cifar10(root: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled images and labels (train batches 1..5, then the test batch) and the train count."""
    d = find_batches_dir(root)
    parts = [read_cifar_batch(d / name) for name in (*TRAIN_BATCHES, TEST_BATCH)]
    n_train = sum(len(lab) for _, lab in parts[:-1])
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]), n_train


def read_class_names(root: str | Path) -> list[str]:
    """Class names from ``batches.meta`` when present, else "0".."9"."""
    meta = find_batches_dir(root) / "batches.meta"
    if meta.is_file():
        obj = safe_unpickle(meta)
        try:
            names = _key(obj, "label_names")
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except (KeyError, TypeError, AttributeError):
            raise FileFormatError(f"{meta}: no 'label_names' list") from None
    return [str(i) for i in range(NUM_CLASSES)]


# --------------------------------------------------------------------------- splits


def cifar_split(labels: np.ndarray, protocol: str, seed: int, query_per_class: int = 0,
                train_per_class: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, train, database) indices into the pooled set, DeepHash-pytorch's rule.

    ``query_per_class``/``train_per_class`` 0 take the protocol's numbers (smaller values make a
    quick variant of the same protocol).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown CIFAR protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    nq, nt, rule = PROTOCOLS[protocol]
    nq = query_per_class or nq
    nt = train_per_class or nt
    if nq < 0 or nt < 0:
        raise ConfigError(f"query_per_class and train_per_class must be >= 0, got {nq}, {nt}")
    rs = np.random.RandomState(seed)
    q, t, rest = [], [], []
    for c in range(NUM_CLASSES):
        idx = np.where(labels == c)[0]
        if len(idx) < nq + nt:
            raise FileFormatError(f"CIFAR class {c} has {len(idx)} images, the {protocol} split needs {nq + nt}")
        idx = idx[rs.permutation(len(idx))]
        q.append(idx[:nq])
        t.append(idx[nq : nq + nt])
        rest.append(idx[nq + nt :])
    query, train, remainder = (np.concatenate(x) for x in (q, t, rest))
    if rule == "rest":
        database = remainder
    elif rule == "train+rest":
        database = np.concatenate((train, remainder))
    else:
        database = train
    return query, train, database


@dataclass
class CifarConfig(ImageDataConfig):
    """CIFAR-10; the registered name (``cifar10``, ``cifar10-1``, ``cifar10-2``) picks the split."""

    name: str = "cifar10"
    augment: bool = False
    query_per_class: int = 0
    train_per_class: int = 0
    query_from_test_batch: bool = False


def _transforms(cfg: CifarConfig) -> tuple[ImageTransform, ImageTransform]:
    if cfg.augment:
        return protocol_transforms(cfg.image_size, cfg.resize, cfg.hflip)
    plain = ImageTransform(resize=cfg.image_size, crop=0, train=False)
    return plain, plain


def load_cifar(cfg: CifarConfig) -> RetrievalData:
    """Read the batches once and build the three splits of ``cfg.name``."""
    validate_image_config(cfg)
    if cfg.name not in PROTOCOLS:
        raise ConfigError(f"CIFAR dataset name must be one of {', '.join(PROTOCOLS)}, got {cfg.name!r}")
    if cfg.query_from_test_batch and cfg.name != "cifar10-2":
        raise ConfigError(f"{cfg.name}.query_from_test_batch: only meaningful for cifar10-2")
    root = resolve_dir(cfg.root, "")
    images, labels, n_train = load_cifar10(root)
    if cfg.query_from_test_batch:
        query = np.arange(n_train, len(labels))
        train = database = np.arange(n_train)
    else:
        query, train, database = cifar_split(labels, cfg.name, cfg.seed, cfg.query_per_class, cfg.train_per_class)
    onehot = one_hot(labels, NUM_CLASSES)
    train_tf, test_tf = _transforms(cfg)

    def split(idx: np.ndarray, tf: ImageTransform, tag: str) -> ImageArrays:
        return ImageArrays(images[idx], onehot[idx], tf, f"{cfg.name}/{tag}", seed=cfg.seed)

    info = {
        "name": cfg.name,
        "kind": "cifar10",
        "root": str(find_batches_dir(root)),
        "topk": 0,
        "class_names": read_class_names(root),
        "query_from_test_batch": bool(cfg.query_from_test_batch),
        "skipped": {},
    }
    return retrieval_data(split(train, train_tf, "train"), split(query, test_tf, "query"),
                          split(database, test_tf, "database"), info)


@register_dataset("cifar10", CifarConfig)
def build_cifar10(cfg: CifarConfig) -> RetrievalData:
    """CIFAR-10, DeepHash ``cifar10``: 1,000 queries / 5,000 train / 54,000 database."""
    return load_cifar(cfg)


@register_dataset("cifar10-1", CifarConfig)
def build_cifar10_1(cfg: CifarConfig) -> RetrievalData:
    """CIFAR-10, DeepHash ``cifar10-1``: 1,000 queries / 5,000 train / 59,000 database (incl. train)."""
    return load_cifar(cfg)


@register_dataset("cifar10-2", CifarConfig)
def build_cifar10_2(cfg: CifarConfig) -> RetrievalData:
    """CIFAR-10, DeepHash ``cifar10-2``: 10,000 queries / 50,000 train = database."""
    return load_cifar(cfg)


__all__ = [
    "CifarConfig",
    "PROTOCOLS",
    "RestrictedUnpickler",
    "cifar_split",
    "find_batches_dir",
    "load_cifar",
    "load_cifar10",
    "read_cifar_batch",
    "read_class_names",
    "safe_unpickle",
]
