"""The collection's model: how an item's frame features become the vector or code the index holds.

Three kinds, chosen with ``bitseek ingest --model``:

* ``float`` (default): the item vector is ``L2(mean_t f_t)`` of its L2-normalised frame features
  ``f_t``, searched by exact inner product (``float-ip``), so the score is a cosine in [-1, 1].
  An image is one frame. This needs no training and is the most accurate out of the box.
* ``itq`` / ``itqBITS``: ITQ (PCA + learned rotation) fitted on the collection's own mean-pooled
  features; codes searched by exact Hamming distance (``flat``). 64 bits by default.
* a trained model folder (``bitseek train``'s ``<out_dir>/model``, e.g. ConMH or WSCH trained on the
  collection's ``features.h5``): its ``encode`` of the padded ``(frames, dim)`` rows gives the codes.

The model's files are copied into ``<collection>/models/<fingerprint>/`` so a collection is
self-contained; the fingerprint (a digest of the weights) names the index file built with it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.errors import ConfigError, InputError

__all__ = ["ItemModel", "parse_model_arg", "pad_frames", "item_vector"]

_ITQ = re.compile(r"^itq(\d+)?$")


def pad_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """``(k, D)`` frames -> ``(n, D)`` rows, repeating frames evenly when ``k < n`` (an image: ``n`` copies).

    The SSVH layout needs a fixed frame count per row; repeating keeps the mean of the frames.
    """
    k = frames.shape[0]
    if k == n:
        return frames
    if k < 1:
        raise InputError("an item has no frames")
    idx = np.minimum((np.arange(n) * k) // n, k - 1) if k < n else np.linspace(0, k - 1, n).round().astype(np.int64)
    return frames[idx]


def item_vector(frames: np.ndarray) -> np.ndarray:
    """``L2(mean_t f_t)`` of ``(k, D)`` or ``(B, k, D)`` frame features, float32."""
    m = np.asarray(frames, dtype=np.float32).mean(axis=-2)
    norm = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.maximum(norm, 1e-12)).astype(np.float32)


def parse_model_arg(text: str) -> dict[str, Any]:
    """``--model`` text -> a model request: ``{"kind": "float"}``, ``{"kind": "itq", "bits": 64}``,
    or ``{"kind": "checkpoint", "path": ...}``."""
    t = text.strip()
    if t.lower() in ("float", "cosine"):
        return {"kind": "float"}
    m = _ITQ.match(t.lower())
    if m:
        bits = int(m.group(1) or 64)
        if bits < 8 or bits % 8:
            raise InputError(f"--model {text}: ITQ bits must be a positive multiple of 8, got {bits}")
        return {"kind": "itq", "bits": bits}
    p = Path(os.path.expanduser(t))
    if (p / "config.json").is_file():
        return {"kind": "checkpoint", "path": str(p.resolve())}
    if (p / "model" / "config.json").is_file():  # a run folder: its final model
        return {"kind": "checkpoint", "path": str((p / "model").resolve())}
    raise InputError(f"--model {text}: expected float, itq, itqBITS (e.g. itq64) or a trained model folder "
                     "(bitseek train's <out_dir>/model, holding config.json)")


@dataclass
class ItemModel:
    """A loaded collection model; ``encode`` turns padded frame rows into what the index stores."""

    desc: dict[str, Any]  # stored in the catalog's meta: kind, fingerprint, bits/dim, dir, name
    net: Any = None

    @property
    def kind(self) -> str:
        return str(self.desc["kind"])

    @property
    def fingerprint(self) -> str:
        return str(self.desc["fingerprint"])

    @property
    def metric(self) -> str:
        return "ip" if self.kind == "float" else "hamming"

    @property
    def label(self) -> str:
        if self.kind == "float":
            return "float (exact cosine)"
        return f"{self.desc.get('name', self.kind)} {self.desc['bits']}-bit"

    def make_index(self) -> Any:
        from bitseek.index import make_index

        if self.kind == "float":
            return make_index("float-ip", dim=int(self.desc["dim"]))
        return make_index("flat", bits=int(self.desc["bits"]))

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """``(B, frames, D)`` float32 -> ``(B, D)`` float32 unit vectors, or ``(B, bits/8)`` packed codes."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if self.kind == "float":
            return item_vector(rows)
        import torch

        from bitseek.codes.bits import pack

        with torch.no_grad():
            codes = self.net.encode({"feats": torch.from_numpy(rows)})
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        return pack(np.asarray(codes))

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def float_model(dim: int, backbone: str) -> "ItemModel":
        fp = hashlib.sha256(f"float:{backbone}:{dim}".encode()).hexdigest()[:16]
        return ItemModel({"kind": "float", "fingerprint": fp, "dim": int(dim), "name": "float"})

    @staticmethod
    def load(root: Path, desc: dict[str, Any]) -> "ItemModel":
        """The model a catalog's meta names, from the collection's ``models/`` folder."""
        if desc.get("kind") == "float":
            return ItemModel(dict(desc))
        from bitseek.train.checkpoint import load_model

        net = load_model(root / str(desc["dir"]))
        if hasattr(net, "eval"):
            net.eval()
        return ItemModel(dict(desc), net)

    @staticmethod
    def fit_itq(root: Path, bits: int, rows: np.ndarray, seed: int = 0) -> "ItemModel":
        """Fit ITQ on ``(n, frames, D)`` rows and store it under ``root/models/<fingerprint>``."""
        from bitseek.models.shallow.itq import ITQ, ITQConfig

        n = rows.shape[0]
        if n < bits:
            raise InputError(f"--model itq{bits}: ITQ with {bits} bits needs at least {bits} items to fit on, "
                             f"the collection has {n}; ingest more files or use fewer bits (e.g. --model itq{max(8, n // 8 * 8)})"
                             if n >= 8 else f"--model itq{bits}: the collection has only {n} items; ITQ needs at least {bits}")
        net = ITQ(ITQConfig(bits=bits, seed=seed)).fit(rows)
        return ItemModel._store(root, net, net.cfg, {"kind": "itq", "bits": int(bits), "name": f"itq"})

    @staticmethod
    def from_checkpoint(root: Path, path: str, dim: int, frames: int) -> "ItemModel":
        """Copy a trained model folder into the collection after checking it fits the collection's features."""
        from bitseek.models.base import HashModel
        from bitseek.models.shallow.base import ShallowHash
        from bitseek.train.checkpoint import load_model, read_model_config

        src = Path(path)
        meta = read_model_config(src)
        net = load_model(src)
        if not isinstance(net, (HashModel, ShallowHash)):
            raise ConfigError(f"--model {path}: a {meta['model'].get('name')} model does not encode frame features "
                              "into codes; train ConMH, WSCH or a shallow hash on the collection's features.h5")
        mcfg = meta["model"]
        fdim = mcfg.get("feature_dim")
        if isinstance(fdim, int) and fdim not in (0, dim):
            raise ConfigError(f"--model {path}: trained on {fdim}-d features, the collection holds {dim}-d")
        mf = mcfg.get("max_frames")
        if isinstance(mf, int) and mf not in (0, frames):
            raise ConfigError(f"--model {path}: trained on {mf} frames per video, the collection samples {frames}")
        if hasattr(net, "eval"):
            net.eval()
        bits = int(mcfg.get("bits") or getattr(net, "bits"))
        fp = str(meta["weights_sha256"])[:16]
        dest = root / "models" / fp
        if not (dest / "config.json").is_file():
            _copy_dir(src, dest, ("config.json", "model.safetensors"))
        return ItemModel({"kind": "checkpoint", "bits": bits, "name": str(mcfg.get("name")), "fingerprint": fp,
                          "dir": f"models/{fp}", "source": str(src)}, net)

    @staticmethod
    def _store(root: Path, net: Any, cfg: Any, desc: dict[str, Any]) -> "ItemModel":
        from bitseek.weights import read_model_config, save_model

        tmp = root / "models" / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(tmp, net, cfg)
        fp = str(read_model_config(tmp)["weights_sha256"])[:16]
        dest = root / "models" / fp
        if dest.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
        return ItemModel({**desc, "fingerprint": fp, "dir": f"models/{fp}"}, net)


def _copy_dir(src: Path, dest: Path, names: tuple[str, ...]) -> None:
    """Copy files into a temporary folder, then rename it into place (a crash leaves no half folder)."""
    tmp = dest.parent / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for n in names:
        shutil.copy2(src / n, tmp / n)
        with open(tmp / n, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, dest)
