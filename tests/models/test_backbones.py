"""Backbones: stage shapes, torchvision parameter layout, local weight files, registry errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import save_file

from bitseek.errors import ConfigError, FileFormatError
from bitseek.models.backbones import build_backbone, list_backbones, read_state_dict

torch.set_num_threads(1)  # the 2 cores are shared; more threads only contend


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_resnets_mini_and_gcvit() -> None:
    names = list_backbones()
    for n in ("resnet18", "resnet50", "resnet101", "resnet-mini", "gcvit_tiny"):
        assert n in names


@pytest.mark.parametrize("size, s3, s4", [(32, 8, 4), (28, 7, 4), (64, 16, 8)])
def test_resnet_mini_stage_shapes(size: int, s3: int, s4: int) -> None:
    net = build_backbone("resnet-mini")
    f3, f4 = net(torch.randn(2, 3, size, size))
    assert f3.shape == (2, 64, s3, s3) and f4.shape == (2, 128, s4, s4)
    assert net.out_channels == (64, 128)
    assert net.feature_sizes(size) == ((s3, s3), (s4, s4))


def test_resnet_mini_stem_stride_two_gives_8_and_4_at_64px() -> None:
    net = build_backbone("resnet-mini", widths=[8, 16, 32, 64], stem_stride=2)
    f3, f4 = net(torch.randn(1, 3, 64, 64))
    assert f3.shape == (1, 32, 8, 8) and f4.shape == (1, 64, 4, 4)


def test_resnet50_stage_shapes_and_odd_sizes() -> None:
    net = build_backbone("resnet50").eval()
    with torch.no_grad():
        for size in (64, 65):
            f3, f4 = net(torch.randn(1, 3, size, size))
            (h3, w3), (h4, w4) = net.feature_sizes(size)
            assert f3.shape == (1, 1024, h3, w3) and f4.shape == (1, 2048, h4, w4)
    assert net.feature_sizes(224) == ((14, 14), (7, 7))
    assert net.feature_sizes(65) == ((5, 5), (3, 3))


@pytest.mark.parametrize("name, n_params", [
    # torchvision's parameter counts minus the 1000-way fc layer
    ("resnet18", 11_689_512 - 513_000),
    ("resnet50", 25_557_032 - 2_049_000),
    ("resnet101", 44_549_160 - 2_049_000),
])
def test_resnet_matches_torchvision_parameter_count(name: str, n_params: int) -> None:
    net = build_backbone(name)
    assert _n_params(net) == n_params


def test_resnet50_uses_torchvision_names() -> None:
    keys = set(build_backbone("resnet50").state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
              "layer3.5.conv3.weight", "layer4.2.bn3.running_var", "layer4.0.conv2.weight"):
        assert k in keys
    assert not any(k.startswith("fc.") for k in keys)


def _mini_state(widths=(8, 16, 32, 64)) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    src = build_backbone("resnet-mini", widths=list(widths))
    with torch.no_grad():  # make the BN statistics non-default so the check is meaningful
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return {k: v.clone() for k, v in src.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_torchvision_named_weights(tmp_path, suffix: str) -> None:
    sd = _mini_state()
    sd["fc.weight"] = torch.randn(10, 64)  # an ImageNet classifier: ignored
    sd["fc.bias"] = torch.randn(10)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    torch.manual_seed(1)
    net = build_backbone("resnet-mini", weights=str(path), widths=[8, 16, 32, 64])
    got = net.state_dict()
    for k, v in got.items():
        assert torch.equal(v, sd[k]), k


def test_load_without_num_batches_tracked_and_wrapped(tmp_path) -> None:
    sd = {k: v for k, v in _mini_state().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    net = build_backbone("resnet-mini", weights=str(path), widths=[8, 16, 32, 64])
    assert torch.equal(net.state_dict()["layer2.0.conv1.weight"], sd["layer2.0.conv1.weight"])


def test_wrong_key_fails_clearly(tmp_path) -> None:
    sd = _mini_state()
    sd["layer2.0.conv9.weight"] = sd.pop("layer2.0.conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(FileFormatError) as e:
        build_backbone("resnet-mini", weights=str(path), widths=[8, 16, 32, 64])
    msg = str(e.value)
    assert "bad.pth" in msg and "missing keys: layer2.0.conv1.weight" in msg
    assert "unexpected keys: layer2.0.conv9.weight" in msg


def test_wrong_shape_and_wrong_files(tmp_path) -> None:
    path = tmp_path / "wide.safetensors"
    save_file(_mini_state(widths=(8, 16, 32, 64)), str(path))
    with pytest.raises(FileFormatError, match=r"shape mismatches: .*conv1\.weight \(file \(8, 3, 3, 3\), model \(16, 3, 3, 3\)\)"):
        build_backbone("resnet-mini", weights=str(path), widths=[16, 16, 32, 64])
    with pytest.raises(FileFormatError, match="does not exist"):
        build_backbone("resnet-mini", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(FileFormatError, match="unsupported weights format"):
        read_state_dict(tmp_path / "w.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FileFormatError, match="junk.safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save({"conv1.weight": torch.zeros(1), "meta": "text"}, tmp_path / "mixed.pth")
    with pytest.raises(FileFormatError, match="no state dict found"):
        read_state_dict(tmp_path / "mixed.pth")


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet50'"):
        build_backbone("resnet05")
    with pytest.raises(ConfigError, match="unknown argument"):
        build_backbone("resnet-mini", depth=3)
    with pytest.raises(ConfigError, match="4 entries"):
        build_backbone("resnet-mini", widths=[8, 16])


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_gcvit_without_timm_tells_how_to_install() -> None:
    with pytest.raises(ConfigError, match=r"pip install bitseek\[timm\]"):
        build_backbone("gcvit_xxtiny", image_size=224)


def test_gcvit_with_timm() -> None:
    pytest.importorskip("timm")
    net = build_backbone("gcvit_xxtiny", image_size=224).eval()
    with torch.no_grad():
        f3, f4 = net(torch.randn(1, 3, 224, 224))
    assert f3.shape == (1, net.out_channels[0], 14, 14) and f4.shape == (1, net.out_channels[1], 7, 7)
    assert net.feature_sizes(224) == ((14, 14), (7, 7))
