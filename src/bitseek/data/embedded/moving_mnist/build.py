"""Writing ``mnist-video`` in the SSVH/ActivityNet layout, reading it back, and the dataset preset.

Building is idempotent: a folder whose manifest (written last) records the same generator version,
parameters and resolved source, and whose files have the recorded sizes, is reused untouched.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from bitseek.atomic import atomic_open
from bitseek.data.base import RetrievalData
from bitseek.data.embedded.common import benchmark_root, load_digits, resolve_source, write_manifest
from bitseek.data.embedded.common import read_manifest as _read_manifest_file
from bitseek.data.embedded.moving_mnist.config import (FILES, GENERATOR_VERSION, LABEL_KEYS, NUM_CLASSES, RECIPE_KEYS,
                                                       SPLIT_CODES, MovingMnistConfig, validate)
from bitseek.data.embedded.moving_mnist.descriptor import DESCRIPTION, FEATURE_DIM, frame_descriptor
from bitseek.data.embedded.moving_mnist.recipes import sample_recipes, split_images
from bitseek.data.embedded.moving_mnist.render import render_clips
from bitseek.errors import FileFormatError, InputError
from bitseek.progress import progress
from bitseek.registry import register_dataset

__all__ = ["build", "build_from_config", "build_mnist_video", "clip_digits", "clip_frames", "default_root",
           "read_manifest"]

NAME = "mnist-video"
_CHUNK_CLIPS = 256  # clips rendered and described at a time: bounded memory


def default_root() -> Path:
    """Where the benchmark goes when ``root`` is empty: ``$BITSEEK_DATA_DIR/mnist-video``."""
    return benchmark_root(NAME)


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a built benchmark; missing or corrupt is a ``FileFormatError``."""
    return _read_manifest_file(Path(root) / FILES["manifest"])


def _manifest_ok(root: Path, expected: dict[str, Any]) -> bool:
    try:
        man = read_manifest(root)
    except FileFormatError:
        return False
    if {k: man.get(k) for k in expected} != expected:
        return False
    sizes = man.get("file_sizes", {})
    for name, size in sizes.items():
        p = root / name
        if not p.exists() or p.stat().st_size != size:
            return False
    return set(sizes) == {v for k, v in FILES.items() if k != "manifest"}


def _write_split(path: Path, split: str, recipe: dict[str, np.ndarray], images: np.ndarray,
                 cfg: MovingMnistConfig, params_json: str) -> None:
    n = recipe["pos"].shape[0]
    with atomic_open(path, "w+b") as fh, h5py.File(fh, "w") as f:
        feats = f.create_dataset("feats", (n, cfg.frames, FEATURE_DIM), dtype="f4")
        for s in progress(range(0, n, _CHUNK_CLIPS), desc=f"build mnist-video {split}", unit="chunk"):
            e = min(s + _CHUNK_CLIPS, n)
            part = {k: v[s:e] for k, v in recipe.items()}
            frames = render_clips(images, part, cfg.canvas, cfg.noise, cfg.seed, split, s)
            feats[s:e] = frame_descriptor(frames)
        for k in RECIPE_KEYS:
            f.create_dataset(k, data=recipe[k])
        if split != "train":  # class ids only where evaluation may look; training never sees them
            f.create_dataset("digits", data=recipe["digits"])
        f.attrs["split"] = split
        f.attrs["generator"] = params_json
        f.attrs["descriptor"] = DESCRIPTION


def _multi_hot(digits: np.ndarray) -> np.ndarray:
    lab = np.zeros((digits.shape[0], NUM_CLASSES), dtype=np.float64)
    rows = np.repeat(np.arange(digits.shape[0]), digits.shape[1])
    cols = digits.reshape(-1).astype(np.int64)
    keep = cols >= 0
    lab[rows[keep], cols[keep]] = 1.0
    return lab


def build_from_config(cfg: MovingMnistConfig, force: bool = False) -> dict[str, Path]:
    """Write (or reuse) the benchmark under ``cfg.root``; returns the paths of every file."""
    from bitseek.eval.chance import label_statistics

    validate(cfg)
    root = benchmark_root(NAME, cfg.root)
    source = resolve_source(cfg.source, NAME)
    params = cfg.params()
    expected = {"format": "bitseek-mnist-video", "generator_version": GENERATOR_VERSION,
                "params": params, "resolved_source": source}
    paths = {k: root / v for k, v in FILES.items()}
    if not force and _manifest_ok(root, expected):
        return paths
    t0 = time.perf_counter()
    digits = load_digits(source)
    master = np.random.SeedSequence([int(cfg.seed), 20240611])
    split_ss, *clip_ss = master.spawn(4)
    pools = split_images(digits.labels, cfg.split, np.random.default_rng(split_ss))
    params_json = json.dumps({**params, "resolved_source": source}, sort_keys=True)
    sizes = {"train": cfg.n_train, "query": cfg.n_query, "database": cfg.n_db}
    recipes: dict[str, dict[str, np.ndarray]] = {}
    for (split, n), pool, ss in zip(sizes.items(), pools, clip_ss):
        recipes[split] = sample_recipes(n, pool, digits.labels, cfg, np.random.default_rng(ss))
        _write_split(paths[split], split, recipes[split], digits.images, cfg, params_json)
    q_lab, d_lab = _multi_hot(recipes["query"]["digits"]), _multi_hot(recipes["database"]["digits"])
    for key, lab in (("query_labels", q_lab), ("db_labels", d_lab)):
        with atomic_open(paths[key], "wb") as fh:
            scipy.io.savemat(fh, {LABEL_KEYS[key]: lab}, format="5", do_compression=False)
    ks = [k for k in (5, 20, 100) if k <= cfg.n_db]
    manifest = {
        **expected,
        "source_sha256": digits.sha256,
        "source_images": int(digits.images.shape[0]),
        "images_per_split": {s: int(p.size) for s, p in zip(sizes, pools)},
        "sizes": sizes,
        "frames": cfg.frames,
        "feature_dim": FEATURE_DIM,
        "label_keys": LABEL_KEYS,
        "label_stats": label_statistics(q_lab, d_lab, ks),
        "generation_seconds": round(time.perf_counter() - t0, 3),
        "file_sizes": {v: paths[k].stat().st_size for k, v in FILES.items() if k != "manifest"},
    }
    write_manifest(paths["manifest"], manifest, indent=2)
    return paths


def build(root: str | os.PathLike[str], seed: int = 0, force: bool = False, **params: Any) -> dict[str, Path]:
    """Write the benchmark under ``root`` (idempotent: files whose recorded parameters match are kept).

    ``params`` are the fields of :class:`MovingMnistConfig` (``n_train``, ``frames``, ``noise`` …).
    """
    from bitseek.config import from_dict

    cfg = from_dict(MovingMnistConfig, {"root": str(root), "seed": seed, **params}, NAME)
    return build_from_config(cfg, force=force)


def _split_name(split: str, allowed: tuple[str, ...], what: str) -> str:
    split = "database" if split == "db" else split
    if split not in allowed:
        raise InputError(f"{what}: split must be {', '.join(allowed)} (or db), got {split!r}")
    return split


def clip_frames(root: str | os.PathLike[str], split: str, index: int, as_float: bool = False) -> np.ndarray:
    """The pixel frames of one clip, exactly as featurised: uint8 (T, H, W) (or float32 in [0, 1]).

    ``split`` is "train", "query" or "database" (alias "db"); the clip is re-rendered from its
    stored recipe and the source digits, which are checked against the manifest's checksum.
    """
    split = _split_name(split, tuple(SPLIT_CODES), "clip_frames")
    root = Path(root)
    man = read_manifest(root)
    params = man["params"]
    digits = load_digits(man["resolved_source"])
    if digits.sha256 != man["source_sha256"]:
        raise FileFormatError(f"{root / FILES['manifest']}: the installed {man['resolved_source']} digits differ "
                              "from those the benchmark was built from; rebuild it")
    with h5py.File(root / FILES[split], "r") as f:
        n = f["pos"].shape[0]
        if not 0 <= index < n:
            raise InputError(f"clip_frames: index {index} out of range for {n} {split} clips")
        recipe = {k: np.asarray(f[k][index: index + 1]) for k in RECIPE_KEYS}
    frames = render_clips(digits.images, recipe, int(params["canvas"]), float(params["noise"]), int(params["seed"]),
                          split, index)[0]
    return frames if as_float else np.round(frames * 255.0).astype(np.uint8)


def clip_digits(root: str | os.PathLike[str], split: str, index: int) -> list[int]:
    """The digit classes shown in a query or database clip (for captions)."""
    split = _split_name(split, ("query", "database"), "clip_digits")
    with h5py.File(Path(root) / FILES[split], "r") as f:
        return [int(d) for d in f["digits"][index] if d >= 0]


@register_dataset(NAME, MovingMnistConfig)
def build_mnist_video(cfg: MovingMnistConfig) -> RetrievalData:
    """Generate the built-in benchmark under ``cfg.root`` if needed, then read it like ActivityNet."""
    from bitseek.data.video_features import VideoFeaturesConfig, load_video_features

    paths = build_from_config(cfg)
    root = paths["train"].parent
    vcfg = VideoFeaturesConfig(
        name="video-features", root=str(root), batch_size=cfg.batch_size,
        train_files=[FILES["train"]], query_files=[FILES["query"]], db_files=[FILES["database"]],
        query_labels=[FILES["query_labels"]], query_labels_key=LABEL_KEYS["query_labels"],
        db_labels=[FILES["db_labels"]], db_labels_key=LABEL_KEYS["db_labels"],
        feature_dim=FEATURE_DIM, max_frames=cfg.frames, ram_budget=cfg.ram_budget,
    )
    data = load_video_features(vcfg)
    man = read_manifest(root)
    data.info.update(
        dataset=NAME,
        root=str(root),
        protocol=f"{cfg.n_query} queries against a separate {cfg.n_db}-clip database; two clips are relevant "
                 "when they show a common digit; train/query/database clips use disjoint digit images",
        source=f"{man['resolved_source']} digits (shipped in the PyPI wheel), generated locally",
        label_stats=man["label_stats"],
        generator=man["params"],
    )
    return data
