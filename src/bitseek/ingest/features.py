"""The collection's frame features in the SSVH HDF5 layout, and the ``collection`` dataset that trains on them.

``<collection>/features.h5`` holds ``feats`` float32 ``(items, frames, dim)`` exactly as the
SSVH/BTH/ConMH files do (so ``H5Shards`` and every video model read it unchanged), plus ``ids``
int64 ``(items,)`` (the catalog id of each row) and ``times`` float32 ``(items, frames)`` (the time
in seconds of each frame; an image's rows repeat its one frame at time 0). Videos with fewer
decodable frames than the collection's frame count repeat frames evenly (``pad_frames``).

The file is derived from the catalog and rewritten whole, atomically (temporary file + rename),
at the end of an ingest run that changed anything, so a kill never leaves it half-written: it is
either the previous complete export or the new one. Training reads it with::

    data:
      name: collection
      root: /path/to/collection
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.atomic import atomic_path
from bitseek.catalog import Catalog
from bitseek.data.base import RetrievalData
from bitseek.errors import ConfigError, FileFormatError
from bitseek.ingest.models import pad_frames
from bitseek.registry import register_dataset

__all__ = ["FEATURES_FILE", "export_features", "exported_ids", "CollectionDataConfig", "load_collection_data"]

FEATURES_FILE = "features.h5"
_BLOCK = 256


def exported_ids(path: Path) -> np.ndarray | None:
    """The ``ids`` of an export, or None when it is missing or unreadable (then it is rebuilt)."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as fh:
            return np.asarray(fh["ids"][:], dtype=np.int64)
    except (OSError, KeyError, ValueError):
        return None


def export_features(catalog: Catalog, path: Path, frames: int, dim: int) -> int:
    """Rewrite ``path`` with every ready item's padded frame features; returns the number of rows."""
    import h5py

    ids = catalog.ids("ready")
    items = catalog.many(ids.tolist())
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        feats = fh.create_dataset("feats", shape=(len(ids), frames, dim), dtype=np.float32)
        times = fh.create_dataset("times", shape=(len(ids), frames), dtype=np.float32)
        fh.create_dataset("ids", data=ids)
        fh.attrs["layout"] = "SSVH feats (videos, frames, dim); ids = bitseek catalog ids"
        at = 0
        ordered = ids.tolist()
        for s in range(0, len(ordered), _BLOCK):
            block = list(catalog.iter_frames(ordered[s:s + _BLOCK], dim))
            if len(block) != len(ordered[s:s + _BLOCK]):
                raise FileFormatError(f"{catalog.path}: a ready item has no stored features")
            feats[at:at + len(block)] = np.stack([pad_frames(f, frames) for _, f in block])
            times[at:at + len(block)] = np.stack([
                pad_frames(np.asarray(items[i].frame_times or [0.0] * f.shape[0], np.float32)[:, None], frames)[:, 0]
                for i, f in block])
            at += len(block)
    return len(ids)


# --------------------------------------------------------------------------- dataset


@dataclass
class CollectionDataConfig:
    """A collection folder as training data: ``root`` is the folder ``bitseek ingest --collection`` wrote.

    Every item is a training video (no labels: for the self-supervised video models); queries are
    the same items, so a run can encode them, but there is nothing to score against.
    """

    name: str = "collection"
    root: str = ""
    batch_size: int = 128
    max_frames: int = 0
    check_finite: bool = True


def load_collection_data(cfg: CollectionDataConfig) -> RetrievalData:
    from bitseek.data.h5features import H5Shards
    from bitseek.data.video_features import VideoFeatureDataset

    if not cfg.root:
        raise ConfigError("data.root is not set: point it at a collection folder (bitseek ingest --collection DIR)")
    if cfg.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg.batch_size}")
    path = Path(os.path.expanduser(cfg.root)) / FEATURES_FILE
    if not path.is_file():
        raise FileFormatError(f"data.root {cfg.root}: no {FEATURES_FILE} there; run bitseek ingest SRC --collection "
                              f"{cfg.root} first")
    shards = H5Shards([path], key="feats", max_frames=cfg.max_frames, check_finite=cfg.check_finite)
    ds = VideoFeatureDataset(shards)
    info: dict[str, Any] = {
        "dataset": "collection", "kind": "video-features", "frames": shards.frames, "file_frames": shards.file_frames,
        "feature_dim": shards.dim, "num_train": len(shards), "num_query": len(shards), "num_database": len(shards),
        "queries_are_database": True, "files": {"train_files": [str(path)]},
        "protocol": "unlabelled collection: trains self-supervised models; nothing to score",
    }
    return RetrievalData(train=ds, query=ds, database=None, query_labels=None, db_labels=None, info=info)


register_dataset("collection", CollectionDataConfig)(load_collection_data)
