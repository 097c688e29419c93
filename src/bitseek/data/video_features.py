"""Video frame-feature datasets: the SSVH/BTH/ConMH file layouts, presets, and the built-in benchmark.

Registered dataset names:

* ``fcvid``, ``activitynet``, ``yfcc``: the three benchmarks of self-supervised video hashing, with
  their published file names, keys, frame counts, feature sizes and query/database protocols
  (see ``docs/datasets.md``). Point ``data.root`` at the downloaded folder and run.
* ``video-features``: the same machinery with every file list given by hand.
* ``mnist-video`` (registered by :mod:`bitseek.data.embedded.moving_mnist`, not here): the built-in
  Moving-MNIST benchmark, generated on first use and then read through these same readers.

Items are ``{"feats": float32 (T, D), "index": int}``. Features are read lazily from HDF5 (see
:mod:`bitseek.data.h5features` for the cost model) unless the training split fits ``data.ram_budget``,
in which case it is read into RAM once; labels are only loaded for evaluation.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bitseek.data.base import RetrievalData
from bitseek.data.h5features import H5Shards, apply_ram_budget, check_ram_budget, ram_budget, validate_features
from bitseek.data.matlabels import load_label_files, load_label_matrix
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset

__all__ = [
    "VideoFeatureDataset",
    "VideoFeaturesConfig",
    "FCVIDConfig",
    "ActivityNetConfig",
    "YFCCConfig",
    "VideoPreset",
    "PRESETS",
    "load_video_features",
    "read_labels",
    "validate_dataset",
]


class VideoFeatureDataset(Dataset):
    """A torch Dataset over :class:`H5Shards`: items ``{"feats": (T, D) float32, "index": i}``.

    ``__getitems__`` (used by ``DataLoader`` for a whole batch) reads the batch's rows in one
    sorted pass, so sequential loaders cost one HDF5 read per batch instead of one per item.
    """

    def __init__(self, source: H5Shards) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    @property
    def frames(self) -> int:
        return self.source.frames

    @property
    def dim(self) -> int:
        return self.source.dim

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        return {"feats": torch.from_numpy(self.source.read(np.asarray([i]))[0]), "index": i}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        block = torch.from_numpy(self.source.read(np.asarray(indices, dtype=np.int64)))
        return [{"feats": block[j], "index": int(i)} for j, i in enumerate(indices)]


def read_labels(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """A label matrix from a .mat file of any version (``key=None``: its only variable, or ``labels``)."""
    return load_label_matrix(path, key)


# --------------------------------------------------------------------------- configs and presets


@dataclass
class VideoFeaturesConfig:
    """Frame-feature files of one dataset. Relative paths are taken relative to ``root``.

    Empty file lists and keys take the preset's values; numbers are taken as given
    (``feature_dim=0`` infers the size from the files, ``max_frames=0`` keeps every frame,
    a smaller ``max_frames`` picks evenly spaced frames). Empty ``db_files`` means the queries
    are the database (FCVID's all-vs-all protocol).
    """

    name: str = "video-features"
    root: str = ""
    batch_size: int = 128
    train_files: list[str] = field(default_factory=list)
    query_files: list[str] = field(default_factory=list)
    db_files: list[str] = field(default_factory=list)
    feats_key: str = "feats"
    query_labels: list[str] = field(default_factory=list)
    query_labels_key: str = "labels"
    db_labels: list[str] = field(default_factory=list)
    db_labels_key: str = "labels"
    feature_dim: int = 0
    max_frames: int = 0
    max_train: int = 0  # use only the first N training videos (0 = all), for quick runs
    check_finite: bool = True  # verify every batch read for NaN/inf rows
    # The training split is read into RAM once when its float32 array fits: a size ("8GB", "512MiB",
    # bytes), "auto" (half of the RAM available at load time) or 0 (always stream from the files).
    ram_budget: str = "auto"

    def __post_init__(self) -> None:
        check_ram_budget(self.ram_budget)


@dataclass(frozen=True)
class VideoPreset:
    """Published facts of a benchmark (research notes §1.2-1.3), used for defaults and ``info``."""

    name: str
    frames: int
    dim: int
    batch_size: int
    train_files: tuple[str, ...]
    query_files: tuple[str, ...]
    db_files: tuple[str, ...]
    query_labels: tuple[str, ...]
    query_labels_key: str
    db_labels: tuple[str, ...]
    db_labels_key: str
    sizes: dict[str, int]
    classes: int
    protocol: str
    source: str

    def defaults(self) -> dict[str, Any]:
        return {
            "train_files": list(self.train_files), "query_files": list(self.query_files),
            "db_files": list(self.db_files), "query_labels": list(self.query_labels),
            "query_labels_key": self.query_labels_key, "db_labels": list(self.db_labels),
            "db_labels_key": self.db_labels_key, "feats_key": "feats",
        }


PRESETS: dict[str, VideoPreset] = {
    "fcvid": VideoPreset(
        name="fcvid", frames=25, dim=4096, batch_size=512,
        train_files=("fcv_train_feats.h5",), query_files=("fcv_test_feats.h5",), db_files=(),
        query_labels=("fcv_test_labels.mat",), query_labels_key="labels", db_labels=(), db_labels_key="labels",
        sizes={"train": 45585, "query": 45600, "database": 45600}, classes=239,
        protocol="all-vs-all: the 45,600 test videos are both queries and database; each query also "
                "retrieves itself at distance 0 and that self-match counts",
        source="SSVH/ConMH release (Baidu pan, see docs/datasets.md); VGG fc features, 25 frames",
    ),
    "activitynet": VideoPreset(
        name="activitynet", frames=30, dim=2048, batch_size=128,
        train_files=("train_feats.h5",), query_files=("query_feats.h5",), db_files=("test_feats.h5",),
        query_labels=("q_label.mat",), query_labels_key="q_label", db_labels=("re_label.mat",),
        db_labels_key="re_label",
        sizes={"train": 9722, "query": 1000, "database": 3758}, classes=200,
        protocol="1,000 queries (query_feats.h5) against a separate 3,758-video database (test_feats.h5)",
        source="BTH author (Tsinghua cloud) / ConMH re-upload; ResNet-50 features of 30 evenly spaced frames",
    ),
    "yfcc": VideoPreset(
        name="yfcc", frames=25, dim=4096, batch_size=128,
        train_files=tuple(f"yfcc_train_feats_{i}.h5" for i in range(1, 10)),
        query_files=("query1000_feats.h5",), db_files=("yfcc_test_feats_1.h5", "yfcc_test_feats_2.h5"),
        query_labels=("query1000_labels.mat",), query_labels_key="labels",
        db_labels=("yfcc_test_labels_1.mat", "yfcc_test_labels_2.mat"), db_labels_key="labels",
        sizes={"train": 409788, "query": 1000, "database": 101256}, classes=80,
        protocol="1,000 queries against all 101,256 test videos (the queries are probably among them; "
                "BTH issue #2)",
        source="SSVH release (features) + BTH author (query features, query and test labels)",
    ),
}


@dataclass
class FCVIDConfig(VideoFeaturesConfig):
    """FCVID preset: 45,585 train / 45,600 test videos, 25 frames × 4096-d VGG features."""

    name: str = "fcvid"
    batch_size: int = 512
    train_files: list[str] = field(default_factory=lambda: list(PRESETS["fcvid"].train_files))
    query_files: list[str] = field(default_factory=lambda: list(PRESETS["fcvid"].query_files))
    query_labels: list[str] = field(default_factory=lambda: list(PRESETS["fcvid"].query_labels))
    feature_dim: int = 4096
    max_frames: int = 25


@dataclass
class ActivityNetConfig(VideoFeaturesConfig):
    """ActivityNet preset: 9,722 train, 1,000 queries, 3,758 database, 30 frames × 2048-d ResNet-50."""

    name: str = "activitynet"
    batch_size: int = 128
    train_files: list[str] = field(default_factory=lambda: list(PRESETS["activitynet"].train_files))
    query_files: list[str] = field(default_factory=lambda: list(PRESETS["activitynet"].query_files))
    db_files: list[str] = field(default_factory=lambda: list(PRESETS["activitynet"].db_files))
    query_labels: list[str] = field(default_factory=lambda: list(PRESETS["activitynet"].query_labels))
    query_labels_key: str = "q_label"
    db_labels: list[str] = field(default_factory=lambda: list(PRESETS["activitynet"].db_labels))
    db_labels_key: str = "re_label"
    feature_dim: int = 2048
    max_frames: int = 30


@dataclass
class YFCCConfig(VideoFeaturesConfig):
    """YFCC preset: 9 training shards (409,788 videos), 1,000 queries, 2 database shards (101,256)."""

    name: str = "yfcc"
    batch_size: int = 128
    train_files: list[str] = field(default_factory=lambda: list(PRESETS["yfcc"].train_files))
    query_files: list[str] = field(default_factory=lambda: list(PRESETS["yfcc"].query_files))
    db_files: list[str] = field(default_factory=lambda: list(PRESETS["yfcc"].db_files))
    query_labels: list[str] = field(default_factory=lambda: list(PRESETS["yfcc"].query_labels))
    db_labels: list[str] = field(default_factory=lambda: list(PRESETS["yfcc"].db_labels))
    feature_dim: int = 4096
    max_frames: int = 25


# --------------------------------------------------------------------------- building RetrievalData


def _resolved(cfg: VideoFeaturesConfig) -> VideoFeaturesConfig:
    """Fill empty file lists/keys from the preset named by ``cfg.name`` (if any)."""
    preset = PRESETS.get(cfg.name)
    if preset is None:
        return cfg
    fill = {k: v for k, v in preset.defaults().items() if not getattr(cfg, k)}
    return dataclasses.replace(cfg, **fill)


def _paths(root: Path | None, names: list[str]) -> list[Path]:
    out = []
    for n in names:
        p = Path(os.path.expanduser(n))
        out.append(p if p.is_absolute() or root is None else root / p)
    return out


def _check_exists(cfg: VideoFeaturesConfig, groups: dict[str, list[Path]]) -> None:
    missing = [f"{g}: {p}" for g, ps in groups.items() for p in ps if not p.exists()]
    if missing:
        preset = PRESETS.get(cfg.name)
        hint = f" Source: {preset.source}." if preset else ""
        raise FileFormatError(
            f"dataset {cfg.name!r}: {len(missing)} file(s) missing under root={cfg.root or '.'!r}: "
            + "; ".join(missing) + "." + hint
        )


def _labels(paths: list[Path], key: str, rows: int, what: str) -> np.ndarray:
    lab = load_label_files(paths, key)
    if lab.shape[0] != rows:
        names = ", ".join(str(p) for p in paths)
        hint = (" (the matrix looks transposed: was it written row-major without MATLAB's column-major "
                "layout?)") if lab.shape[1] == rows else ""
        raise FileFormatError(f"{names}: {lab.shape[0]} label rows for {rows} {what} videos{hint}")
    return lab


class _LabelLoader:
    """Reads and checks the query/database label files once, on first use (the evaluator's, never training's)."""

    def __init__(self, load: Any) -> None:
        self._load = load
        self._value: tuple[np.ndarray, np.ndarray | None] | None = None

    def get(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._value is None:
            self._value = self._load()
        return self._value

    def query(self) -> np.ndarray:
        return self.get()[0]

    def database(self) -> np.ndarray | None:
        return self.get()[1]


class _LazyLabels:
    """A data descriptor: the field holds a zero-argument loader until it is first read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_lazy_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get(self.slot)
        if callable(value):
            value = value()
            obj.__dict__[self.slot] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclasses.dataclass
class VideoRetrievalData(RetrievalData):
    """:class:`RetrievalData` whose label matrices are read only when something asks for them.

    Training touches only ``train``, so it opens no label file (a missing or damaged label file is an
    error at evaluation, where it matters, and not a reason to refuse a self-supervised training run).
    """


VideoRetrievalData.query_labels = _LazyLabels()  # type: ignore[assignment]
VideoRetrievalData.db_labels = _LazyLabels()  # type: ignore[assignment]
VideoRetrievalData.query_labels.__set_name__(VideoRetrievalData, "query_labels")  # type: ignore[attr-defined]
VideoRetrievalData.db_labels.__set_name__(VideoRetrievalData, "db_labels")  # type: ignore[attr-defined]


class _LabelInfo(dict):
    """``info`` whose label statistics (``num_classes``, ``unlabelled_queries``) load the labels on demand."""

    _LABEL_KEYS = ("num_classes", "unlabelled_queries")

    def __init__(self, labels: _LabelLoader, base: dict[str, Any]) -> None:
        super().__init__(base)
        self._labels = labels

    def _fill(self) -> None:
        q, _ = self._labels.get()
        self["num_classes"] = int(q.shape[1]) if q.ndim == 2 else int(q.max()) + 1
        self["unlabelled_queries"] = int((q.sum(axis=1) == 0).sum()) if q.ndim == 2 else 0

    def __missing__(self, key: str) -> Any:
        if key in self._LABEL_KEYS:
            self._fill()
            return self[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._LABEL_KEYS and not dict.__contains__(self, key):
            self._fill()
        return dict.get(self, key, default)


def load_video_features(cfg: VideoFeaturesConfig) -> RetrievalData:
    """Open every split of a frame-feature dataset lazily; labels are read on first use (by the evaluator)."""
    cfg = _resolved(cfg)
    if cfg.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg.batch_size}")
    preset = PRESETS.get(cfg.name)
    if preset is not None and not cfg.root and not all(Path(f).is_absolute() for f in cfg.train_files):
        raise ConfigError(
            f"data.root is not set: point it at the folder holding {', '.join(preset.train_files[:2])} … "
            f"(e.g. data.root=/data/{cfg.name})"
        )
    for what in ("train_files", "query_files", "query_labels"):
        if not getattr(cfg, what):
            raise ConfigError(f"data.{what}: no files given for dataset {cfg.name!r}")
    if bool(cfg.db_files) != bool(cfg.db_labels):
        raise ConfigError("data.db_files and data.db_labels go together: give both (separate database) "
                          "or neither (the queries are the database)")
    root = Path(os.path.expanduser(cfg.root)) if cfg.root else None
    groups = {k: _paths(root, getattr(cfg, k))
              for k in ("train_files", "query_files", "db_files", "query_labels", "db_labels")}
    _check_exists(cfg, {k: v for k, v in groups.items() if not k.endswith("labels")})

    def shards(files: list[Path], limit: int = 0) -> H5Shards:
        return H5Shards(files, key=cfg.feats_key, feature_dim=cfg.feature_dim, max_frames=cfg.max_frames,
                        check_finite=cfg.check_finite, limit=limit)

    train = shards(groups["train_files"], cfg.max_train)
    query = shards(groups["query_files"])
    db = shards(groups["db_files"]) if groups["db_files"] else None
    for other in (query, db):
        if other is not None and (other.dim, other.file_frames) != (train.dim, train.file_frames):
            raise FileFormatError(
                f"{other.paths[0]}: (frames, dim) = ({other.file_frames}, {other.dim}) but the training files "
                f"have ({train.file_frames}, {train.dim})"
            )
    # only the training split: it is read in shuffled order every epoch, query and database once, in order
    held = apply_ram_budget(train, ram_budget(cfg.ram_budget), "train")

    def load_labels() -> tuple[np.ndarray, np.ndarray | None]:
        _check_exists(cfg, {k: groups[k] for k in ("query_labels", "db_labels")})
        q_lab = _labels(groups["query_labels"], cfg.query_labels_key, len(query), "query")
        d_lab = _labels(groups["db_labels"], cfg.db_labels_key, len(db), "database") if db is not None else None
        if d_lab is not None and d_lab.shape[1] != q_lab.shape[1]:
            raise FileFormatError(
                f"{groups['db_labels'][0]}: {d_lab.shape[1]} classes but the query labels "
                f"({groups['query_labels'][0]}) have {q_lab.shape[1]}"
            )
        return q_lab, d_lab

    labels = _LabelLoader(load_labels)
    info: dict[str, Any] = _LabelInfo(labels, {
        "dataset": cfg.name,
        "kind": "video-features",
        "frames": train.frames,
        "file_frames": train.file_frames,
        "feature_dim": train.dim,
        "num_train": len(train),
        "num_query": len(query),
        "num_database": len(query) if db is None else len(db),
        "queries_are_database": db is None,
        "train_in_memory": held,
        "files": {k: [str(p) for p in v] for k, v in groups.items() if v},
    })
    if preset is not None:
        info.update(protocol=preset.protocol, source=preset.source, published_sizes=dict(preset.sizes))
    else:
        info["protocol"] = ("queries are the database (all-vs-all, self-match counted)" if db is None
                            else "separate query and database files")
    return VideoRetrievalData(
        train=VideoFeatureDataset(train),
        query=VideoFeatureDataset(query),
        database=None if db is None else VideoFeatureDataset(db),
        query_labels=labels.query,  # type: ignore[arg-type]
        db_labels=labels.database if db is not None else None,  # type: ignore[arg-type]
        info=info,
    )


def validate_dataset(cfg: VideoFeaturesConfig, chunk: int = 512) -> dict[str, dict[str, Any]]:
    """Scan every feature file of a dataset config in chunks for unreadable or NaN/inf rows.

    Raises FileFormatError at the first bad file; returns a per-file summary otherwise. Run it
    once after a download, before a long training run.
    """
    cfg = _resolved(cfg)
    root = Path(os.path.expanduser(cfg.root)) if cfg.root else None
    files = [p for k in ("train_files", "query_files", "db_files") for p in _paths(root, getattr(cfg, k))]
    _check_exists(cfg, {"features": files})
    return {str(p): validate_features(p, cfg.feats_key, chunk=chunk, feature_dim=cfg.feature_dim) for p in files}


@register_dataset("video-features", VideoFeaturesConfig)
def build_video_features(cfg: VideoFeaturesConfig) -> RetrievalData:
    return load_video_features(cfg)


register_dataset("fcvid", FCVIDConfig)(build_video_features)
register_dataset("activitynet", ActivityNetConfig)(build_video_features)
register_dataset("yfcc", YFCCConfig)(build_video_features)
